"""The workloads of ANCHORS.md and the request bodies they send, built before any timing starts.

W1 "describe this photo": a 1024x1024 JPEG, 128 output tokens. W2 "quick question on a
screenshot": a 640x480 JPEG and a one-line question, 32 output tokens. W1-repeat: W1 re-sending
one image the server has already seen (the warm-up sent it), at concurrency 1 by default.
Every other request carries an image no earlier request of the run sent, so no cache helps.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from flashsight.bench.images import jpeg_data_url, photo_jpeg

DEFAULT_CONCURRENCY = (1, 8, 32, 100)


@dataclass(frozen=True)
class Workload:
    name: str
    width: int
    height: int
    prompt: str
    output_tokens: int
    repeat_image: bool = False  # every request re-sends the warm-up's image
    default_concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY


WORKLOADS: dict[str, Workload] = {
    "W1": Workload("W1", 1024, 1024, "Describe this image in detail.", 128),
    "W2": Workload("W2", 640, 480, "What is the main thing shown in this screenshot?", 32),
    "W1-repeat": Workload("W1-repeat", 1024, 1024, "Describe this image in detail.", 128, True, (1,)),
}


def requests_per_level(concurrency: int) -> int:
    """ANCHORS.md: enough requests that every client sends at least three, and never fewer than 10."""
    return max(10, 3 * concurrency)


@dataclass(frozen=True)
class RequestOptions:
    """What every request body carries besides the image and the prompt."""

    model: str
    thinking: str = "off"  # off | on | omit: what to send as chat_template_kwargs.enable_thinking
    temperature: float = 0.0


@dataclass(frozen=True)
class PreparedRequest:
    """One request, serialised ahead of time so neither image encoding nor JSON is measured."""

    index: int
    body: bytes
    jpeg_bytes: int


class RequestFactory:
    """Builds request number `index` of a run: image (seed, index), or image (seed, 0) on repeat."""

    def __init__(self, workload: Workload, options: RequestOptions, seed: int) -> None:
        self.workload = workload
        self.options = options
        self.seed = seed

    def prepare(self, indices: range) -> list[PreparedRequest]:
        with ThreadPoolExecutor() as pool:  # PIL and numpy release the GIL while they work
            return list(pool.map(self.prepare_one, indices))

    def prepare_one(self, index: int) -> PreparedRequest:
        image_index = 0 if self.workload.repeat_image else index
        jpeg = photo_jpeg(self.workload.width, self.workload.height, self.seed, image_index)
        body = json.dumps(self.body(jpeg_data_url(jpeg))).encode()
        return PreparedRequest(index, body, len(jpeg))

    def body(self, image_url: str) -> dict[str, Any]:
        tokens = self.workload.output_tokens
        content = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": self.workload.prompt}]
        body: dict[str, Any] = {
            "model": self.options.model,
            "messages": [{"role": "user", "content": content}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": tokens,
            "temperature": self.options.temperature,
            # vLLM's extensions, honoured by flashsight and SGLang, so that every answer is exactly
            # `tokens` long; servers that ignore them show it in the mean output tokens.
            "min_tokens": tokens,
            "ignore_eos": True,
        }
        if self.options.thinking != "omit":
            body["chat_template_kwargs"] = {"enable_thinking": self.options.thinking == "on"}
        return body


def with_output_tokens(workload: Workload, output_tokens: int | None) -> Workload:
    return workload if output_tokens is None else replace(workload, output_tokens=output_tokens)
