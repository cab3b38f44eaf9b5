"""The per-client limit on chat requests running at once: a request holds its slot while its
response is being sent, and gives it back as the last byte goes out, not when its task has
finished unwinding (a closed-loop client sends its next request at once and must not be refused)."""

from __future__ import annotations

import asyncio
import json

from flashsight.security.gate import SecurityGate
from flashsight.security.layer import SecurityLayer
from flashsight.server.settings import ServerSettings

CHAT = "/v1/chat/completions"


class _ChatApp:
    """Streams a response in steps the test releases, then waits again before returning (as a
    task unwinding after its last byte does)."""

    def __init__(self) -> None:
        self.finish_body = asyncio.Event()
        self.may_return = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})
        await self.finish_body.wait()
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        await self.may_return.wait()


class _Call:
    """One request through the gate, with what it was sent back."""

    def __init__(self, gate: SecurityGate) -> None:
        self.messages: list[dict] = []
        scope = {"type": "http", "method": "POST", "path": CHAT, "headers": [(b"host", b"127.0.0.1")],
                 "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "scheme": "http",
                 "query_string": b"", "root_path": "", "http_version": "1.1", "app": None}  # fmt: skip
        self.task = asyncio.create_task(gate(scope, self._receive, self._send))

    async def _receive(self) -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def _send(self, message: dict) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")


def _gate(tmp_path, app) -> SecurityGate:
    settings = ServerSettings(data_dir=tmp_path, max_concurrent_requests_per_client=1)
    return SecurityGate(app, SecurityLayer(settings))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_second_request_is_refused_while_the_first_is_still_answering(tmp_path):
    async def scenario() -> None:
        app = _ChatApp()
        gate = _gate(tmp_path, app)
        first = _Call(gate)
        await _settle()
        second = _Call(gate)
        await second.task
        assert second.status == 429
        error = json.loads(second.body())["error"]
        assert error["code"] == "too_many_concurrent_requests" and "at most 1" in error["message"]
        headers = dict(second.messages[0]["headers"])
        assert headers[b"retry-after"] == b"1"
        app.finish_body.set()
        app.may_return.set()
        await first.task
        assert first.status == 200

    asyncio.run(scenario())


def test_the_slot_is_free_once_the_last_byte_is_sent(tmp_path):
    async def scenario() -> None:
        app = _ChatApp()
        gate = _gate(tmp_path, app)
        first = _Call(gate)
        await _settle()
        app.finish_body.set()  # the whole answer goes out; the first task has not returned
        await _settle()
        assert first.body().endswith(b"[DONE]\n\n") and not first.task.done()
        second = _Call(gate)
        await _settle()
        assert second.status == 200  # admitted, streaming its own answer
        app.may_return.set()
        await asyncio.gather(first.task, second.task)
        app.finish_body.clear()
        # Both slots were given back exactly once (the count is not below zero): one more
        # request runs, and the one after it is refused.
        third = _Call(gate)
        await _settle()
        fourth = _Call(gate)
        await fourth.task
        assert third.status == 200 and fourth.status == 429
        app.finish_body.set()
        await third.task

    asyncio.run(scenario())
