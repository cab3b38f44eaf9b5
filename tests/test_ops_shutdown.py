"""SIGTERM is a graceful shutdown: no new connections, the requests in flight finish normally,
their audit records are written, then the engine process stops and the server exits with status 0."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest
from httpx_sse import connect_sse

from audit_support import search_log, word
from server_process import flashsight_process

STREAMS = 10
MAX_TOKENS = 250
BODY = {"max_tokens": MAX_TOKENS, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}


class Stream(threading.Thread):
    """One streamed completion read to its end; `started` is set at its first generated token."""

    def __init__(self, base_url: str, text: str):
        super().__init__(daemon=True)
        self.base_url = base_url
        self.body = BODY | {"messages": [{"role": "user", "content": text}]}
        self.started = threading.Event()
        self.payloads: list[dict] = []
        self.done = False

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=120) as client:
            with connect_sse(client, "POST", "/v1/chat/completions", json=self.body) as source:
                for event in source.iter_sse():
                    if event.data == "[DONE]":
                        self.done = True
                    else:
                        self.payloads.append(json.loads(event.data))
                        if len(self.payloads) == 2:
                            self.started.set()

    @property
    def text(self) -> str:
        return "".join(choice["delta"].get("content") or "" for p in self.payloads for choice in p["choices"])


def refuses_connections(base_url: str) -> bool:
    """True once a new request is turned away unanswered: refused, or (when it reached the
    listening socket as the server closed it) reset or closed before any response."""
    try:
        httpx.get(f"{base_url}/health", timeout=5)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return True
    return False


def test_sigterm_lets_streams_finish_then_exits_cleanly(tiny_model_dir, tmp_path, capsys):
    marker = word()
    env = {"FLASHSIGHT_SHUTDOWN_GRACE_S": "120", "FLASHSIGHT_AUDIT_DIR": str(tmp_path)}
    with flashsight_process(tiny_model_dir, [], env) as server:
        engine_pid = httpx.get(f"{server.base_url}/v1/status").json()["engine"]["engine_pid"]
        streams = [Stream(server.base_url, f"{marker} {i}") for i in range(STREAMS)]
        for stream in streams:
            stream.start()
        for stream in streams:
            assert stream.started.wait(120), "a stream never began"
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while not refuses_connections(server.base_url) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert refuses_connections(server.base_url)
        for stream in streams:
            stream.join(120)
        assert server.process.wait(120) == 0, server.log_text()[-3000:]
    for stream in streams:
        assert stream.done
        assert not any("error" in payload for payload in stream.payloads)
        finishes = [choice["finish_reason"] for p in stream.payloads for choice in p["choices"]]
        assert [reason for reason in finishes if reason] == ["length"]
    assert_gone(engine_pid)
    assert_recorded(streams, search_log(capsys, tmp_path, marker, STREAMS))


def assert_recorded(streams: list[Stream], records: list[dict]) -> None:
    """The log, read after the server exited, holds each stream's complete record."""
    by_text = {record["messages"][0]["text"]: record for record in records}
    for stream in streams:
        record = by_text[stream.body["messages"][0]["content"]]
        usage = stream.payloads[-1]["usage"]
        assert record["status"] == 200 and "error" not in record
        # The record keeps the model's text as written; the stream's content is trimmed at both ends.
        assert record["finish_reason"] == "length" and record["output"].strip() == stream.text
        assert record["completion_tokens"] == usage["completion_tokens"] == MAX_TOKENS
        assert record["prompt_tokens"] == usage["prompt_tokens"] > 0


def assert_gone(pid: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"the engine process {pid} outlived the server")
