"""The engine runs in a supervised child process: killed, hung or frozen, it is restarted without
an operator; requests in flight end with an error, new ones get 503 with Retry-After meanwhile,
and the next request after it is back succeeds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from server_process import REPO_ROOT, flashsight_process, free_port

CHAT = "/v1/chat/completions"
HANG_MARKER = "hang-the-engine-now"
LONG = {"messages": [{"role": "user", "content": "Go on."}], "max_tokens": 6000, "ignore_eos": True, "stream": True}
FAST_SUPERVISION = {
    "FLASHSIGHT_ENGINE_WATCHDOG_S": "3",
    "FLASHSIGHT_ENGINE_HEARTBEAT_S": "0.2",
    "FLASHSIGHT_ENGINE_RESTART_BACKOFF_S": "1",
    "FLASHSIGHT_ENGINE_RESTART_BACKOFF_MAX_S": "2",
    "FLASHSIGHT_ENGINE_TEST_HANG_MARKER": HANG_MARKER,
}
RESTART_WAIT_S = 120


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with flashsight_process(tiny_model_dir, [], FAST_SUPERVISION) as server:
        yield server


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def engine_status(http: httpx.Client) -> dict:
    return http.get("/v1/status").json()["engine"]


def read_stream(events: Iterator[ServerSentEvent]) -> list:
    """The stream's data payloads, parsed, up to [DONE] (which must come)."""
    payloads = []
    for event in events:
        if event.data == "[DONE]":
            return payloads
        payloads.append(json.loads(event.data))
    pytest.fail("the stream ended without [DONE]")


def wait_until_back(http: httpx.Client, restarts: int) -> dict:
    deadline = time.monotonic() + RESTART_WAIT_S
    while time.monotonic() < deadline:
        if http.get("/ready").status_code == 200:
            status = engine_status(http)
            assert status["engine_restarts"] == restarts
            return status
        time.sleep(0.2)
    pytest.fail("the engine did not come back")


def assert_serves(http: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
    response = http.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] == "length"


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "engine_unavailable"


def test_killed_engine_fails_the_stream_and_comes_back(http):
    before = wait_until_back(http, engine_status(http)["engine_restarts"])
    with connect_sse(http, "POST", CHAT, json=LONG) as source:
        events = source.iter_sse()
        first = [json.loads(next(events).data) for _ in range(2)]  # the role chunk, a first token
        os.kill(before["engine_pid"], signal.SIGKILL)
        payloads = first + read_stream(events)
    assert "error" in payloads[-1]
    assert payloads[-1]["error"]["type"] == "server_error"
    assert all(choice["finish_reason"] is None for p in payloads[:-1] for choice in p["choices"])
    # Not ready from the moment the engine was lost (the restart waits out its back-off first).
    assert_unavailable(http.get("/ready"))
    assert_unavailable(http.post(CHAT, json={"messages": [{"role": "user", "content": "Hi"}]}))
    after = wait_until_back(http, before["engine_restarts"] + 1)
    assert after["engine_pid"] != before["engine_pid"]
    assert http.get("/health").json()["status"] == "ok"
    assert_serves(http)


def test_hung_engine_is_detected_and_restarted(http, server):
    before = wait_until_back(http, engine_status(http)["engine_restarts"])
    hanging = {**LONG, "messages": [{"role": "user", "content": f"Please {HANG_MARKER}."}]}
    with connect_sse(http, "POST", CHAT, json=hanging) as source:
        payloads = read_stream(source.iter_sse())  # the role chunk, a token, the watchdog's verdict
    assert "error" in payloads[-1]
    after = wait_until_back(http, before["engine_restarts"] + 1)
    assert after["engine_pid"] != before["engine_pid"]
    assert "made no progress" in server.log_text()
    assert_serves(http)


def test_frozen_engine_process_is_detected_and_restarted(http, server):
    before = wait_until_back(http, engine_status(http)["engine_restarts"])
    os.kill(before["engine_pid"], signal.SIGSTOP)  # alive, but silent
    deadline = time.monotonic() + RESTART_WAIT_S
    while engine_status(http)["engine_restarts"] == before["engine_restarts"] and time.monotonic() < deadline:
        time.sleep(0.2)
    after = wait_until_back(http, before["engine_restarts"] + 1)
    assert after["engine_pid"] != before["engine_pid"]
    assert "sent no heartbeat" in server.log_text()
    assert_serves(http)


def test_a_model_that_cannot_load_is_one_line_not_a_restart_loop(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "config.json").write_text('{"truncated": ')
    command = [sys.executable, "-m", "flashsight.cli", "serve", "--model", str(broken), "--device", "cpu",
               "--port", str(free_port())]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("flashsight: error: could not load the model")
    assert "Traceback" not in result.stderr


def test_the_supervisor_does_not_import_torch():
    code = "import sys, flashsight.ops.supervisor; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr or "flashsight.ops.supervisor imported torch"
