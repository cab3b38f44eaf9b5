"""Every chat request, served or refused, ends as one audit record and one set of metric samples.

A pure ASGI middleware (streaming passes through untouched): it starts the request's trace, watches
the status and any error the response carries, and once the last byte is sent (or the client has
gone) writes the record from a worker thread, shielded from the request's cancellation.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashsight.ops.audit_record import request_record
from flashsight.ops.audit_trace import TRACE_STATE, RequestTrace
from flashsight.security.principal import client_ip_of, principal_of
from flashsight.server.errors import SERVER_ERROR, APIError

logger = logging.getLogger("flashsight.audit")

CHAT_PATH = "/v1/chat/completions"
_ERROR_BODY_LIMIT = 64 * 1024  # enough for any error body we send; a larger body is not an error
_REFUSED_RETRY_AFTER_S = 30
DISCONNECTED = "the client disconnected before the answer was complete"


class OperationsMiddleware:
    def __init__(self, app: ASGIApp, include_images: bool, refuse_on_failure: bool) -> None:
        self.app = app
        self.include_images = include_images
        self.refuse_on_failure = refuse_on_failure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CHAT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        trace = RequestTrace()
        scope.setdefault("state", {})[TRACE_STATE] = trace
        response = _ResponseWatch(send)
        try:
            if await self._refusing(scope):
                await _refusal().response()(scope, receive, response.send)
            else:
                await self.app(scope, receive, response.send)
        except Exception:  # not a cancellation: that is a client leaving, judged by the trace
            response.failed()
            raise
        finally:
            with anyio.CancelScope(shield=True):  # a client that left still gets its record
                await self._finish(Request(scope), trace, response)

    async def _refusing(self, scope: Scope) -> bool:
        """With `audit_on_failure = "refuse"`, no request is served that could not be recorded."""
        audit = scope["app"].state.audit
        if not self.refuse_on_failure or audit is None or not audit.failing:
            return False
        return not await anyio.to_thread.run_sync(audit.record_event, "audit_resumed")

    async def _finish(self, request: Request, trace: RequestTrace, response: _ResponseWatch) -> None:
        ended = time.monotonic()
        duration = ended - trace.started
        state = request.app.state
        state.metrics.observe(trace, response.status, duration)
        if state.audit is None:
            return
        fields = self._outcome(request, trace, response) | {"latency_s": round(duration, 6)}
        try:
            await anyio.to_thread.run_sync(self._write, state.audit, trace, fields)
        except Exception:
            logger.exception("an audit record could not be built")
        state.metrics.audit_write.observe(time.monotonic() - ended)

    def _outcome(self, request: Request, trace: RequestTrace, response: _ResponseWatch) -> dict[str, Any]:
        fields: dict[str, Any] = {"kind": "request", "request_id": f"req-{uuid.uuid4().hex}"}
        fields |= {"caller": principal_of(request).label, "client_ip": client_ip_of(request)}
        fields |= trace.generation_fields() | {"status": response.status}
        # The engine's own reason (lost, out of memory) says more than the client's generic 500.
        error = fields.get("error") or response.error
        if error is None and trace.generation_closed_early:
            error = DISCONNECTED
        if error is not None:
            fields["error"] = error
        fields["gpu_memory"] = _gpu_memory(request)
        fields["model"] = request.app.state.engine.info.name  # the model served; a request may name another
        return fields

    def _write(self, audit: Any, trace: RequestTrace, fields: dict[str, Any]) -> None:
        record = fields | request_record(trace, self.include_images)
        audit.write({name: record[name] for name in _FIELD_ORDER if name in record} | record)


# The order fields appear in a record, for people reading the log.
_FIELD_ORDER = ("kind", "request_id", "caller", "client_ip", "model", "status", "error", "finish_reason")


class _ResponseWatch:
    """Passes every message on, noting the status and the error a response reports."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500  # until a response starts: an exception escaped, or nothing was sent
        self.error: str | None = None
        self._is_stream = False
        self._error_body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = dict(message.get("headers") or [])
            self._is_stream = headers.get(b"content-type", b"").startswith(b"text/event-stream")
        elif message["type"] == "http.response.body":
            self._note_body(message.get("body", b""), message.get("more_body", False))
        await self._send(message)

    def failed(self) -> None:
        if self.error is None:
            self.error = "internal server error"

    def _note_body(self, chunk: bytes, more: bool) -> None:
        if self._is_stream:
            if chunk.startswith(b'data: {"error"'):  # the stream's final error event
                self.error = _error_message(chunk.removeprefix(b"data: "))
        elif self.status >= 400 and len(self._error_body) < _ERROR_BODY_LIMIT:
            self._error_body += chunk
            if not more:
                self.error = _error_message(bytes(self._error_body))


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return "an error without a message"


def _gpu_memory(request: Request) -> dict[str, int] | None:
    try:
        return request.app.state.engine.snapshot().get("gpu_memory")
    except Exception:  # the engine may be gone (restarting); the record is still written
        return None


def _refusal() -> APIError:
    message = "The server cannot write its audit log, so it takes no requests for now; retry later."
    headers = {"Retry-After": str(_REFUSED_RETRY_AFTER_S)}
    return APIError(503, message, type=SERVER_ERROR, code="audit_unavailable", headers=headers)
