"""A cheap estimate of what a chat request costs in tokens, for the tokens-per-minute budget.

Images count as GLM's processor will make them: sides rounded to multiples of 28 inside a pixel
budget, (h/28)*(w/28) tokens. Text counts as one token per 4 bytes, rounded up, which errs high
for English; the output counts at its full `max_tokens`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

FACTOR = 28
# The processor's budget applies to 2*h*w (an image is two frames): MODEL_NOTES.md.
MIN_PIXELS = 12544 // 2
MAX_PIXELS = 9633792 // 2
BYTES_PER_TEXT_TOKEN = 4


def image_tokens(width: int, height: int) -> int:
    h = max(FACTOR, round(height / FACTOR) * FACTOR)
    w = max(FACTOR, round(width / FACTOR) * FACTOR)
    if h * w > MAX_PIXELS:
        beta = math.sqrt(height * width / MAX_PIXELS)
        h = max(FACTOR, math.floor(height / beta / FACTOR) * FACTOR)
        w = max(FACTOR, math.floor(width / beta / FACTOR) * FACTOR)
    elif h * w < MIN_PIXELS:
        beta = math.sqrt(MIN_PIXELS / (height * width))
        h = math.ceil(height * beta / FACTOR) * FACTOR
        w = math.ceil(width * beta / FACTOR) * FACTOR
    return (h // FACTOR) * (w // FACTOR)


def text_tokens(text: str) -> int:
    return math.ceil(len(text.encode()) / BYTES_PER_TEXT_TOKEN)


def prompt_tokens(messages: Iterable[dict[str, Any]]) -> int:
    """Engine messages (images already decoded, as `ChatRequest` carries them)."""
    total = 0
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        for part in parts:
            if part.get("type") == "image":
                total += image_tokens(*part["image"].size)
            else:
                total += text_tokens(str(part.get("text") or ""))
        total += text_tokens(str(message.get("tool_calls") or "")) + text_tokens(str(message.get("reasoning_content") or ""))
    return total
