"""The engine runs in a supervised child process: killed, hung or frozen, it is restarted without
an operator; requests in flight end with an error, new ones get 503 with Retry-After meanwhile,
and the next request after it is back succeeds. Each of those requests is in the audit log, and
/metrics counts the restart."""

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

from audit_support import search_log, word
from server_process import REPO_ROOT, flashsight_process, free_port
from test_ops_metrics import scrape

from flashsight.ops.supervisor import LOST_MESSAGE

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
RESTARTS_SERIES = "flashsight_engine_restarts_total"


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("audit")


@pytest.fixture(scope="module")
def server(tiny_model_dir, audit_dir):
    with flashsight_process(tiny_model_dir, [], FAST_SUPERVISION | {"FLASHSIGHT_AUDIT_DIR": str(audit_dir)}) as server:
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


def asking(text: str, **fields) -> dict:
    return {"messages": [{"role": "user", "content": text}], **fields}


def assert_serves(http: httpx.Client, text: str = "Hello") -> None:
    body = asking(text, max_tokens=4)
    response = http.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] == "length"


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "engine_unavailable"


def test_killed_engine_fails_the_stream_and_comes_back(http, server, audit_dir, capsys):
    before = wait_until_back(http, engine_status(http)["engine_restarts"])
    restarts_counted = scrape(server.base_url)[RESTARTS_SERIES]
    marker = word()
    with connect_sse(http, "POST", CHAT, json=LONG | asking(f"{marker} killed")) as source:
        events = source.iter_sse()
        first = [json.loads(next(events).data) for _ in range(2)]  # the role chunk, a first token
        os.kill(before["engine_pid"], signal.SIGKILL)
        payloads = first + read_stream(events)
    assert "error" in payloads[-1]
    assert payloads[-1]["error"]["type"] == "server_error"
    assert all(choice["finish_reason"] is None for p in payloads[:-1] for choice in p["choices"])
    # Not ready from the moment the engine was lost (the restart waits out its back-off first).
    assert_unavailable(http.get("/ready"))
    refused = http.post(CHAT, json=asking(f"{marker} refused"))
    assert_unavailable(refused)
    after = wait_until_back(http, before["engine_restarts"] + 1)
    assert after["engine_pid"] != before["engine_pid"]
    assert scrape(server.base_url)[RESTARTS_SERIES] == restarts_counted + 1
    assert http.get("/health").json()["status"] == "ok"
    assert_serves(http, f"{marker} next")
    records = {r["messages"][0]["text"].removeprefix(f"{marker} "): r for r in search_log(capsys, audit_dir, marker, 3)}
    assert_lost_record(records["killed"])
    assert records["refused"]["status"] == 503
    assert records["refused"]["error"] == refused.json()["error"]["message"]
    assert records["next"]["status"] == 200 and records["next"]["finish_reason"] == "length"
    assert "error" not in records["next"]


def assert_lost_record(record: dict) -> None:
    """The audit record of a request whose engine was lost while it streamed: the client saw a
    generic error event, the log says why."""
    assert record["status"] == 200 and record["stream"] is True
    assert record["finish_reason"] == "error" and record["error"] == LOST_MESSAGE
    assert record["completion_tokens"] >= 1 and record["prompt_tokens"] > 0


def test_hung_engine_is_detected_and_restarted(http, server, audit_dir, capsys):
    before = wait_until_back(http, engine_status(http)["engine_restarts"])
    marker = word()
    with connect_sse(http, "POST", CHAT, json=LONG | asking(f"{marker} Please {HANG_MARKER}.")) as source:
        payloads = read_stream(source.iter_sse())  # the role chunk, a token, the watchdog's verdict
    assert "error" in payloads[-1]
    after = wait_until_back(http, before["engine_restarts"] + 1)
    assert after["engine_pid"] != before["engine_pid"]
    assert "made no progress" in server.log_text()
    assert_serves(http, f"{marker} next")
    hung, served = search_log(capsys, audit_dir, marker, 2)
    assert_lost_record(hung)
    assert served["status"] == 200 and served["finish_reason"] == "length"


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
