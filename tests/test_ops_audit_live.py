"""Every chat request to a live server leaves one audit record: streamed or not, refused with a
4xx, or abandoned by its client; secrets never reach the log, and `logs search` finds exactly the
records asked for."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from audit_support import CHAT, data_url, jsonl, mentions, plain_records, run_logs, wait_for_record, word
from server_process import flashsight_server, png_bytes


@pytest.fixture(scope="module")
def audited(tiny_model_dir, tmp_path_factory):
    """(base URL, audit folder) of a server writing a plaintext audit log."""
    audit_dir = tmp_path_factory.mktemp("audit")
    with flashsight_server(tiny_model_dir, [], {"FLASHSIGHT_AUDIT_DIR": str(audit_dir)}) as base_url:
        yield base_url, audit_dir


@pytest.fixture(scope="module")
def openai_client(audited):
    from openai import OpenAI

    return OpenAI(base_url=f"{audited[0]}/v1", api_key="sk-never-logged-1234", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(tiny_model_dir) -> str:
    return Path(tiny_model_dir).name


def test_a_completion_with_an_image_is_recorded_in_full(audited, openai_client, model):
    _, audit_dir = audited
    marker, png = word(), png_bytes((40, 30), (10, 200, 10))
    content = [{"type": "image_url", "image_url": {"url": data_url(png)}}, {"type": "text", "text": f"Colour? {marker}"}]
    reply = openai_client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}],
        max_tokens=6,
    )  # fmt: skip
    record = wait_for_record(audit_dir, mentions(marker))
    assert record["kind"] == "request" and record["request_id"] == reply.id
    assert record["caller"] == "anonymous" and record["client_ip"] == "127.0.0.1"
    assert record["status"] == 200 and record["model"] == model and record["stream"] is False
    assert [m["role"] for m in record["messages"]] == ["system", "user"]
    assert record["messages"][0]["text"] == "Be brief."
    [image] = record["messages"][1]["images"]
    assert image == {"source": "data", "sha256": hashlib.sha256(png).hexdigest(), "bytes": len(png), "width": 40, "height": 30}
    assert record["finish_reason"] == "length"
    assert (record["prompt_tokens"], record["completion_tokens"]) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert isinstance(record["output"], str) and record["output"]
    assert 0 <= record["queue_s"] <= record["ttft_s"] <= record["latency_s"]
    # the first token's way, stage by stage (the supervised engine's process in between), adds up
    phases = record["ttft_phases_s"]
    assert list(phases) == ["receive", "handoff", "prepare", "queue", "prefill", "delivery"]
    assert phases["queue"] == record["queue_s"] and min(phases.values()) >= 0
    assert sum(phases.values()) == pytest.approx(record["ttft_s"], abs=1e-4)
    assert "gpu_memory" in record and "error" not in record


def test_a_streamed_completion_is_recorded(audited, openai_client, model):
    _, audit_dir = audited
    marker = word()
    stream = openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": marker}], max_tokens=5, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    record = wait_for_record(audit_dir, mentions(marker))
    assert record["stream"] is True and record["status"] == 200
    assert record["request_id"] == chunks[0].id
    assert record["completion_tokens"] == chunks[-1].usage.completion_tokens == 5


@pytest.mark.parametrize(
    ("body", "status"),
    [({"max_tokens": -1}, 400), ({"model": "not-this-one"}, 404), ({"messages": "not a list"}, 400)],
)
def test_a_refused_request_is_recorded_with_its_status_and_message(audited, body, status):
    base_url, audit_dir = audited
    marker = word()
    response = httpx.post(f"{base_url}{CHAT}", json={"messages": [{"role": "user", "content": marker}], **body}, timeout=30)
    assert response.status_code == status
    message = response.json()["error"]["message"]
    record = wait_for_record(audit_dir, lambda r: r.get("error") == message)
    assert record["status"] == status and record["request_id"].startswith("req-")
    if status == 404:  # refused after the body was read: its messages are on record too
        assert record["messages"][0]["text"] == marker


def test_a_client_that_leaves_mid_stream_is_recorded(audited):
    base_url, audit_dir = audited
    marker = word()
    body = {"messages": [{"role": "user", "content": marker}], "max_tokens": 4000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{base_url}{CHAT}", json=body, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(4):
            next(lines)
    record = wait_for_record(audit_dir, mentions(marker))
    assert record["status"] == 200
    assert record["error"] == "the client disconnected before the answer was complete"
    assert record["finish_reason"] is None and 0 < record["completion_tokens"] < 4000


def test_credentials_and_cookies_never_reach_the_log(audited, openai_client, model):
    base_url, audit_dir = audited
    by_http, by_sdk = word(), word()
    headers = {"Authorization": "Bearer sk-header-secret-5678", "Cookie": "flashsight_session=cookie-secret-9012"}
    body = {"messages": [{"role": "user", "content": by_http}], "max_tokens": 2}
    assert httpx.post(f"{base_url}{CHAT}", json=body, headers=headers, timeout=30).status_code == 200
    openai_client.chat.completions.create(model=model, messages=[{"role": "user", "content": by_sdk}], max_tokens=2)
    wait_for_record(audit_dir, mentions(by_http))
    wait_for_record(audit_dir, mentions(by_sdk))
    text = "".join(path.read_text() for path in audit_dir.iterdir())
    for secret in ("sk-header-secret-5678", "cookie-secret-9012", "sk-never-logged-1234"):
        assert secret not in text


def test_logs_search_returns_exactly_the_matching_records(audited, openai_client, model, capsys):
    _, audit_dir = audited
    marker = word()
    for i in range(3):
        openai_client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"{marker} {i}"}],
                                              max_tokens=2)  # fmt: skip
    openai_client.chat.completions.create(model=model, messages=[{"role": "user", "content": word()}], max_tokens=2)
    wait_for_record(audit_dir, mentions(f"{marker} 2"))
    code, out, err = run_logs(capsys, "search", "--dir", str(audit_dir), "--grep", f"{marker} [02]$", "--status", "200")
    assert code == 0 and err == ""
    found = jsonl(out)
    assert [r["messages"][0]["text"] for r in found] == [f"{marker} 0", f"{marker} 2"]
    expected = [r for r in plain_records(audit_dir) if r.get("messages") and r["messages"][0]["text"] in (f"{marker} 0", f"{marker} 2")]
    assert found == expected
