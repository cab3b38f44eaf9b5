"""`audit_on_failure = "refuse"`: while the audit log cannot be written, chat requests get 503
with Retry-After (nothing is served unrecorded), and serving resumes by itself once it can."""

from __future__ import annotations

import shutil

import httpx
import pytest
from audit_support import CHAT, plain_records, wait_for_record
from server_process import flashsight_server


@pytest.fixture(scope="module")
def refusing(tiny_model_dir, tmp_path_factory):
    audit_dir = tmp_path_factory.mktemp("refusing") / "audit"
    env = {"FLASHSIGHT_AUDIT_DIR": str(audit_dir), "FLASHSIGHT_AUDIT_ON_FAILURE": "refuse"}
    with flashsight_server(tiny_model_dir, [], env) as base_url:
        yield base_url, audit_dir


def ask(base_url: str) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(f"{base_url}{CHAT}", json=body, timeout=60)


def audit_state(base_url: str) -> str:
    return httpx.get(f"{base_url}/health").json()["audit"]


def test_requests_are_refused_while_the_log_cannot_be_written(refusing):
    base_url, audit_dir = refusing
    assert ask(base_url).status_code == 200
    wait_for_record(audit_dir, lambda r: r.get("kind") == "request")
    moved = audit_dir.with_name("audit-moved")
    shutil.move(audit_dir, moved)
    audit_dir.write_text("not a folder")
    try:
        ask(base_url)  # served or refused, its record is lost: the log is failing from here on
        for _ in range(200):
            if audit_state(base_url) == "failing":
                break
        assert audit_state(base_url) == "failing"
        refused = ask(base_url)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "30"
        assert refused.json()["error"]["code"] == "audit_unavailable"
        assert httpx.get(f"{base_url}/v1/models").status_code == 200  # only requests that need recording stop
    finally:
        audit_dir.unlink()
        shutil.move(moved, audit_dir)
    assert ask(base_url).status_code == 200
    assert audit_state(base_url) == "ok"
    kinds = [record["kind"] for record in plain_records(audit_dir)]
    assert kinds[:1] == ["request"] and "audit_resumed" in kinds
