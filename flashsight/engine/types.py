"""What crosses the engine boundary: requests in, token events out.

Everything here is plain data (picklable), so the engine can run in another process later.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

FinishReason = Literal["stop", "length", "abort", "error"]


@dataclass(frozen=True)
class GuidedDecoding:
    """A constraint on the output, enforced token by token: `json_object` (any JSON object),
    `json_schema` (`spec` is the schema as JSON text), `ebnf` (`spec` is a grammar), or
    `tool_calls` (`spec` is `{"tools": [OpenAI tools], "tool_choice": "required" | {named}}` as
    JSON text: the answer is one or more calls in GLM's format, arguments valid for their tool)."""

    kind: Literal["json_object", "json_schema", "ebnf", "tool_calls"]
    spec: str = ""


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. `temperature == 0` means greedy."""

    max_tokens: int | None = None  # None: up to the context limit
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False
    min_tokens: int = 0
    guided: GuidedDecoding | None = None


@dataclass
class ChatRequest:
    """An OpenAI-style conversation, ready for the model.

    `messages` follow OpenAI's shape, except that each image part is
    `{"type": "image", "image": <PIL.Image.Image in RGB, or a Picture>}`: fetching and decoding
    happened before.
    `tools` are OpenAI tool definitions, rendered by the chat template.
    """

    request_id: str
    messages: list[dict[str, Any]]
    sampling: SamplingParams
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Picture:
    """A decoded RGB picture as its raw bytes (row-major, 3 a pixel): how an image crosses to the
    engine's process. A PIL image would cross as its `tobytes()`, be rebuilt on the other side,
    and be turned into bytes again by the prompt builder; a Picture's bytes are made once."""

    width: int
    height: int
    data: bytes
    mode: ClassVar[str] = "RGB"

    @classmethod
    def of(cls, image: Any) -> Picture:
        """An RGB PIL image's pixels."""
        return cls(image.width, image.height, image.tobytes())

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def to_image(self) -> Any:
        """As a PIL image (a copy), for code that needs one."""
        from PIL import Image

        return Image.frombytes(self.mode, self.size, self.data)

    def __reduce_ex__(self, protocol: int):
        # From protocol 5 the pixels can travel beside the pickle, not copied into it: a pickler
        # given a buffer_callback (the engine's pipe, flashsight.ops.wire) hands them over as
        # they are; any other pickler writes them inline, as before.
        data = pickle.PickleBuffer(self.data) if protocol >= 5 else self.data
        return _picture, (self.width, self.height, data)


def _picture(width: int, height: int, data) -> Picture:
    return Picture(width, height, bytes(data) if not isinstance(data, bytes) else data)


@dataclass(frozen=True)
class RequestTimeline:
    """When the engine took a request through its stages, on the request's first event. Times are
    `time.monotonic()` seconds: one clock for every process of a machine, so the server can set
    them beside its own."""

    received: float  # the engine was handed the request
    prepared: float  # its prompt was built (tokens, pixels) and it joined the engine's queue
    scheduled: float  # its first step was queued
    first_token: float  # its first token was known on the CPU

    @property
    def queued_s(self) -> float:
        return self.scheduled - self.prepared


@dataclass
class GenerationEvent:
    """One step of a request's output: the text added since the previous event.

    The last event of a request has `finish_reason` set. Token counts are cumulative.
    """

    text: str
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None
    error: str | None = None  # set when finish_reason == "error"
    timeline: RequestTimeline | None = None  # on the first event


@dataclass(frozen=True)
class ModelInfo:
    """What the server tells clients about the loaded model."""

    name: str  # the id clients send as `model`
    path: str
    device: str
    dtype: str
    max_model_len: int
