"""What the server process and the engine process tell each other over their pipe.

Server to engine: ("generate", key, ChatRequest), ("abort", key), ("stop",).
Engine to server: ("started", ModelInfo, sampling defaults, snapshot) or ("load_failed", message)
once; then ("events", [(key, GenerationEvent | Refusal)], counts) as requests progress and
("heartbeat", snapshot) every `heartbeat_s`. Everything is plain picklable data; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashsight.engine.errors import (
    EngineDeadError,
    EngineError,
    EngineOverloadedError,
    InvalidRequestError,
)


@dataclass(frozen=True)
class WorkerOptions:
    """How the engine process reports and looks after itself."""

    heartbeat_s: float
    gpu_trim_fraction: float  # share of the GPU's memory in use above which caches are dropped
    hang_marker: str | None = None  # test hook: a step of a request whose text holds it never ends


@dataclass(frozen=True)
class Refusal:
    """A request the engine refused before its first event, as the exception to raise."""

    kind: str  # "invalid" | "overloaded" | "failed"
    message: str
    param: str | None = None
    retry_after_s: float = 1.0

    @classmethod
    def of(cls, exc: Exception) -> Refusal:
        if isinstance(exc, InvalidRequestError):
            return cls("invalid", str(exc), param=exc.param)
        if isinstance(exc, EngineOverloadedError):
            return cls("overloaded", str(exc), retry_after_s=exc.retry_after_s)
        return cls("failed", str(exc) if isinstance(exc, EngineError) else "the engine could not prepare the request")

    def exception(self) -> EngineError:
        if self.kind == "invalid":
            return InvalidRequestError(self.message, param=self.param)
        if self.kind == "overloaded":
            return EngineOverloadedError(self.message, retry_after_s=self.retry_after_s)
        return EngineDeadError(self.message)
