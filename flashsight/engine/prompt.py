"""From OpenAI-style messages to model inputs, with the checkpoint's own template and processor."""

from __future__ import annotations

import hashlib
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import torch
from transformers.image_transforms import convert_to_rgb

from flashsight.engine.errors import InvalidRequestError
from flashsight.engine.model.positions import next_position, prompt_positions
from flashsight.engine.types import Picture


@dataclass
class PreparedPrompt:
    token_ids: list[int]
    positions: torch.Tensor  # [3, len(token_ids)] M-RoPE positions
    next_position: int  # where generated tokens continue
    pixel_values: torch.Tensor | None  # the processor's patch rows for all images
    image_grids: list[tuple[int, int, int]]  # (t, h, w) in patches, per image
    image_spans: list[tuple[int, int]] = field(default_factory=list)  # token range of each image
    image_hashes: list[str] = field(default_factory=list)  # content hash of each image

    def image_pixels(self, index: int) -> torch.Tensor:
        """The patch rows of one image."""
        sizes = [t * h * w for t, h, w in self.image_grids]
        start = sum(sizes[:index])
        return self.pixel_values[start : start + sizes[index]]


def fallback_template() -> str:
    return resources.files("flashsight.engine").joinpath("chat_template.jinja").read_text()


class PromptBuilder:
    def __init__(self, processor, image_token_id: int, merge_size: int, image_device=None, image_dtype=None):
        self.processor = processor
        self.image_token_id = image_token_id
        self.merge_size = merge_size
        # On a GPU, the image processor resizes and normalises there (its own torchvision code,
        # on CUDA tensors): tens of milliseconds of CPU per photo become one or two, and the
        # patches are already where the vision tower reads them, in its dtype. The work is queued
        # on the caller's current stream and never waited for: the engine builds prompts on its
        # own thread, between the steps it queues, and a wait there would idle the GPU.
        self.image_device, self.image_dtype = image_device, image_dtype
        self.template = processor.chat_template or fallback_template()
        # Fast tokenizers set their padding/truncation state per call: concurrent calls (the
        # engine's thread, a test's) would collide ("Already borrowed"), so tokenizing is
        # serialized. It is short: each image is one placeholder until the ids are expanded.
        self._tokenize_lock = threading.Lock()
        # A photo's content hash (~2-3 ms of SHA-256 over its pixels, which releases the GIL)
        # runs beside the processor instead of after it, off the first token's path. (Hashed in
        # pieces on four threads, it took nothing measurable off W1's first token: session 16.)
        self._hashing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="flashsight-image-hash")

    def build(
        self, messages: list[dict[str, Any]], template_kwargs: dict[str, Any], tools: list[dict[str, Any]] | None = None
    ) -> PreparedPrompt:
        template_messages, images = split_images(messages)
        text = self.render(template_messages, template_kwargs, tools)
        # read once: hashed, and uploaded if RGB (a Picture is its bytes already)
        raws = [image.data if isinstance(image, Picture) else image.tobytes() for image in images]
        hashes = [self._hashing.submit(image_hash, image, raw) for image, raw in zip(images, raws)]
        pixels, grids = self._process_images(images, raws) if images else (None, [])
        ids = self._token_ids(text, grids)
        positions = prompt_positions(ids, self.image_token_id, grids, self.merge_size)
        return PreparedPrompt(
            ids, positions, next_position(positions), pixels, grids,
            image_spans(ids, self.image_token_id), [digest.result() for digest in hashes],
        )  # fmt: skip

    def _process_images(self, images: list, raws: list[bytes]) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
        """The image processor's patch rows for all images, and each image's (t, h, w) grid."""
        try:
            if self.image_device is not None:
                # The processor would copy its own uint8 tensor from pageable memory, which
                # waits for everything queued on the stream first: uploaded here from pinned
                # memory instead, RGB as the processor makes it.
                rgb = [image if image.mode == "RGB" else convert_to_rgb(image) for image in images]
                inputs = [self._upload(new, raw if new is old else None) for old, new, raw in zip(images, rgb, raws)]
                options = {"device": str(self.image_device), "input_data_format": "channels_first"}
            else:  # the processor's own path takes PIL images
                inputs = [image.to_image() if isinstance(image, Picture) else image for image in images]
                options = {}
            processed = self.processor.image_processor(images=inputs, return_tensors="pt", **options)
        except ValueError as exc:  # e.g. an aspect ratio the image processor refuses
            raise InvalidRequestError(f"an image cannot be processed: {exc}", param="messages") from None
        pixels = processed["pixel_values"]
        if self.image_dtype is not None:
            pixels = pixels.to(self.image_dtype)  # the vision tower's first cast, done early: half the memory
        return pixels, [tuple(grid) for grid in processed["image_grid_thw"].tolist()]

    def _token_ids(self, text: str, grids: list[tuple[int, int, int]]) -> list[int]:
        """The prompt's ids as the processor makes them: it writes each image's placeholder out
        once per image token and tokenizes that text. A placeholder is a special token, which
        the tokenizer always splits out alone, so tokenizing the short text and repeating each
        placeholder's id gives the same ids without tokenizing a thousand placeholders."""
        with self._tokenize_lock:
            ids = self.processor.tokenizer([text], return_token_type_ids=False)["input_ids"][0]
        placeholders = ids.count(self.image_token_id)
        if placeholders != len(grids):
            raise InvalidRequestError(
                f"an image cannot be processed: the text holds {placeholders} image placeholders for {len(grids)} images",
                param="messages",
            )
        if not grids:
            return ids
        sizes = iter([t * h * w // self.merge_size**2 for t, h, w in grids])
        expanded: list[int] = []
        for token in ids:
            if token == self.image_token_id:
                expanded.extend(itertools.repeat(token, next(sizes)))
            else:
                expanded.append(token)
        return expanded

    def _upload(self, image, raw: bytes | None = None) -> torch.Tensor:
        """An RGB picture as the uint8 [3, H, W] tensor the processor would make of it, copied to
        the GPU from pinned memory without waiting for the stream. `raw` is the picture's
        `tobytes()` when the caller has it already; it is copied once, into pinned memory."""
        raw = image.tobytes() if raw is None else raw
        pinned = torch.empty((image.height, image.width, 3), dtype=torch.uint8, pin_memory=True)
        np.copyto(pinned.numpy(), np.frombuffer(raw, np.uint8).reshape(pinned.shape))
        return pinned.to(self.image_device, non_blocking=True).permute(2, 0, 1)

    def render(
        self, messages: list[dict[str, Any]], template_kwargs: dict[str, Any], tools: list[dict[str, Any]] | None = None
    ) -> str:
        reserved = ("add_generation_prompt", "tokenize", "tools", "chat_template")
        kwargs = {k: v for k, v in template_kwargs.items() if k not in reserved}
        try:
            return self.processor.apply_chat_template(
                messages, chat_template=self.template, tokenize=False, add_generation_prompt=True, tools=tools, **kwargs
            )
        except Exception as exc:  # a template error is the request's shape, not a server fault
            raise InvalidRequestError(f"the messages do not fit the chat template: {exc}", param="messages") from None


def image_spans(token_ids: list[int], image_token_id: int) -> list[tuple[int, int]]:
    spans, index = [], 0
    for is_image, run in itertools.groupby(token_ids, key=lambda t: t == image_token_id):
        length = len(list(run))
        if is_image:
            spans.append((index, index + length))
        index += length
    return spans


def image_hash(image, raw: bytes | None = None) -> str:
    """A content hash: the same picture re-sent (even re-encoded losslessly) hashes the same.
    `raw` is the picture's `tobytes()` when the caller has it already."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes() if raw is None else raw)
    return digest.hexdigest()


def split_images(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list]:
    """Messages for the template (image parts reduced to placeholders) and the images in order."""
    images, out = [], []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    images.append(part["image"])
                    parts.append({"type": "image"})
                else:
                    parts.append(part)
            message = {**message, "content": parts}
        out.append(message)
    return out, images
