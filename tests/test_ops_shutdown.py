"""SIGTERM is a graceful shutdown: no new connections, the requests in flight finish normally,
then the engine process stops and the server exits with status 0."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest
from httpx_sse import connect_sse

from server_process import flashsight_process

STREAMS = 10
BODY = {"messages": [{"role": "user", "content": "Tell me more."}], "max_tokens": 250, "ignore_eos": True,
        "stream": True}  # fmt: skip


class Stream(threading.Thread):
    """One streamed completion read to its end; `started` is set at its first generated token."""

    def __init__(self, base_url: str):
        super().__init__(daemon=True)
        self.base_url = base_url
        self.started = threading.Event()
        self.payloads: list[dict] = []
        self.done = False

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=120) as client:
            with connect_sse(client, "POST", "/v1/chat/completions", json=BODY) as source:
                for event in source.iter_sse():
                    if event.data == "[DONE]":
                        self.done = True
                    else:
                        self.payloads.append(json.loads(event.data))
                        if len(self.payloads) == 2:
                            self.started.set()


def refuses_connections(base_url: str) -> bool:
    try:
        httpx.get(f"{base_url}/health", timeout=5)
    except httpx.ConnectError:
        return True
    return False


def test_sigterm_lets_streams_finish_then_exits_cleanly(tiny_model_dir):
    with flashsight_process(tiny_model_dir, [], {"FLASHSIGHT_SHUTDOWN_GRACE_S": "120"}) as server:
        engine_pid = httpx.get(f"{server.base_url}/v1/status").json()["engine"]["engine_pid"]
        streams = [Stream(server.base_url) for _ in range(STREAMS)]
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


def assert_gone(pid: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"the engine process {pid} outlived the server")
