"""`POST /v1/chat/completions`, streamed or not."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from flashsight.engine.errors import EngineDeadError
from flashsight.engine.types import GenerationEvent
from flashsight.ops.audit_trace import trace_of
from flashsight.security.chat_guard import admit_chat
from flashsight.server.deps import ConverterDep, EngineDep
from flashsight.server.errors import APIError
from flashsight.server.glm_output import OutputReader
from flashsight.server.schemas import AssistantMessage, ChatCompletion, ChatCompletionRequest, Choice
from flashsight.server.streaming import CompletionMeta, finish_reason_of, finished_ok, stream_response, usage_of

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, engine: EngineDep, converter: ConverterDep
) -> ChatCompletion | StreamingResponse:
    trace = trace_of(request)  # what the audit log and the metrics see of this request
    trace.saw_body(body)
    chat_request = await admit_chat(request, body, converter)  # the security layer's limits, then convert
    meta = CompletionMeta(id=chat_request.request_id, created=int(time.time()), model=engine.info.name)
    events = trace.watch(chat_request, engine.generate(chat_request))
    first = await _first_event(events)  # request errors and overload surface here, as 4xx/503
    reader = OutputReader(chat_request, parallel_tool_calls=body.parallel_tool_calls is not False)
    if body.stream:
        return stream_response(first, events, meta, body.include_usage(), reader)
    try:
        text, last = await _collect(first, events, request)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return _completion(meta, reader, text, last)


async def _first_event(events: AsyncIterator[GenerationEvent]) -> GenerationEvent:
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise EngineDeadError("the engine ended the request without any output") from None


async def _collect(
    first: GenerationEvent, events: AsyncIterator[GenerationEvent], request: Request
) -> tuple[str, GenerationEvent]:
    """All of the output; stops early (and the caller aborts generation) if the client leaves."""
    parts, last = [first.text], first
    while last.finish_reason is None:
        if await request.is_disconnected():
            raise APIError(400, "The client disconnected before the completion was ready.")
        last = await anext(events)
        parts.append(last.text)
    return "".join(parts), last


def _completion(meta: CompletionMeta, reader: OutputReader, text: str, last: GenerationEvent) -> ChatCompletion:
    finished_ok(last)
    output = reader.parse(text)
    message = AssistantMessage(
        content=output.content if output.content or not output.tool_calls else None,
        reasoning_content=output.reasoning_content or None,
        tool_calls=output.tool_calls or None,
        boxes=reader.boxes(output.content) or None,
    )
    choice = Choice(message=message, finish_reason=finish_reason_of(last, bool(output.tool_calls)))
    return ChatCompletion(id=meta.id, created=meta.created, model=meta.model, choices=[choice], usage=usage_of(last))
