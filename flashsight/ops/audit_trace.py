"""What one chat request did, gathered while it runs, for its audit record and its metrics.

The operations middleware starts a trace for every chat request; the chat route hands it the
parsed body and the engine's event stream (`trace_of(request).watch(...)`), and the middleware
turns it into a record when the response has been sent, whatever happened on the way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from flashsight.engine.types import ChatRequest, GenerationEvent
    from flashsight.server.schemas import ChatCompletionRequest

TRACE_STATE = "operations_trace"


@dataclass
class RequestTrace:
    """Times are `time.monotonic()` seconds; `started` is when the request reached the server."""

    started: float = field(default_factory=time.monotonic)
    body: ChatCompletionRequest | None = None
    chat_request: ChatRequest | None = None
    first_token_at: float | None = None
    _last_token_at: float | None = None
    token_gaps: list[float] = field(default_factory=list)  # seconds between successive output events
    output: list[str] = field(default_factory=list)
    last_event: GenerationEvent | None = None
    queued_s: float | None = None
    generation_closed_early: bool = False  # the iterator was closed before the engine finished

    def saw_body(self, body: ChatCompletionRequest) -> None:
        self.body = body

    async def watch(
        self, chat_request: ChatRequest, events: AsyncIterator[GenerationEvent]
    ) -> AsyncIterator[GenerationEvent]:
        """The engine's events, passed through unchanged; closing this closes them."""
        self.chat_request = chat_request
        try:
            async for event in events:
                self._saw_event(event)
                yield event
        finally:
            if self.last_event is None or self.last_event.finish_reason is None:
                self.generation_closed_early = True
            await events.aclose()  # type: ignore[attr-defined]

    def _saw_event(self, event: GenerationEvent) -> None:
        now = time.monotonic()
        if event.queued_s is not None:
            self.queued_s = event.queued_s
        if event.token_ids:
            if self.first_token_at is None:
                self.first_token_at = now
            elif self._last_token_at is not None:
                self.token_gaps.append(now - self._last_token_at)
            self._last_token_at = now
        self.output.append(event.text)
        self.last_event = event

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    def generation_fields(self) -> dict[str, Any]:
        """The output side of the record; empty when the request never reached the engine."""
        last = self.last_event
        if self.chat_request is None:
            return {}
        fields: dict[str, Any] = {"request_id": self.chat_request.request_id, "output": "".join(self.output)}
        if last is not None:
            fields |= {"finish_reason": last.finish_reason, "prompt_tokens": last.prompt_tokens,
                       "completion_tokens": last.completion_tokens}  # fmt: skip
            if last.finish_reason == "error":
                fields["error"] = last.error or "generation failed"
        if self.queued_s is not None:
            fields["queue_s"] = round(self.queued_s, 6)
        if self.ttft_s is not None:
            fields["ttft_s"] = round(self.ttft_s, 6)
        return fields


def trace_of(connection: HTTPConnection) -> RequestTrace:
    """The request's trace; a detached one when the operations layer is not installed."""
    trace = getattr(connection.state, TRACE_STATE, None)
    if trace is None:
        trace = RequestTrace()
        setattr(connection.state, TRACE_STATE, trace)
    return trace
