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
    from flashsight.engine.types import ChatRequest, GenerationEvent, RequestTimeline
    from flashsight.server.schemas import ChatCompletionRequest

TRACE_STATE = "operations_trace"

# The stages of a request's time to first token, in order: they add up to it.
PHASES = ("receive", "handoff", "prepare", "queue", "prefill", "delivery")


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
    handed_at: float | None = None  # when the request went to the engine
    timeline: RequestTimeline | None = None  # the engine's side of the first token
    generation_closed_early: bool = False  # the iterator was closed before the engine finished

    def saw_body(self, body: ChatCompletionRequest) -> None:
        self.body = body

    async def watch(
        self, chat_request: ChatRequest, events: AsyncIterator[GenerationEvent]
    ) -> AsyncIterator[GenerationEvent]:
        """The engine's events, passed through unchanged; closing this closes them."""
        self.chat_request = chat_request
        self.handed_at = time.monotonic()  # the engine client sends the request on the first `anext`
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
        if event.timeline is not None:
            self.timeline = event.timeline
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

    @property
    def queued_s(self) -> float | None:
        return None if self.timeline is None else self.timeline.queued_s

    def phases(self) -> dict[str, float]:
        """Where the time to first token went (`PHASES`), in seconds; empty until it is known.
        receive: the server reading, checking and decoding the request; handoff: the way to the
        engine (its process's pipe, when supervised); prepare: tokens and pixels; queue: waiting
        for a step; prefill: the steps up to the first token; delivery: that token's way back."""
        line = self.timeline
        if line is None or self.handed_at is None or self.first_token_at is None:
            return {}
        marks = (self.started, self.handed_at, line.received, line.prepared, line.scheduled, line.first_token,
                 self.first_token_at)  # fmt: skip
        return {phase: max(0.0, end - start) for phase, start, end in zip(PHASES, marks, marks[1:])}

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
        if phases := self.phases():
            fields["ttft_phases_s"] = {phase: round(seconds, 6) for phase, seconds in phases.items()}
        return fields


def trace_of(connection: HTTPConnection) -> RequestTrace:
    """The request's trace; a detached one when the operations layer is not installed."""
    trace = getattr(connection.state, TRACE_STATE, None)
    if trace is None:
        trace = RequestTrace()
        setattr(connection.state, TRACE_STATE, trace)
    return trace
