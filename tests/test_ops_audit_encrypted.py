"""A live server with an audit key: records are sealed on disk, open only with the key, and betray
any tampering; a log that cannot be written shows in /health while requests are still served
(`audit_on_failure = "serve"`, the default). Its metrics are on a separate admin port."""

from __future__ import annotations

import json
import shutil
import uuid

import httpx
import pytest
from audit_support import CHAT, data_url, jsonl, run_logs
from server_process import flashsight_server, free_port, png_bytes

from flashsight.ops.audit_crypto import write_new_key_file
from flashsight.ops.audit_files import log_files


@pytest.fixture(scope="module")
def keyed(tiny_model_dir, tmp_path_factory):
    """(base URL, audit folder, key file, metrics admin port) of a server sealing its records."""
    root = tmp_path_factory.mktemp("keyed")
    key_file, audit_dir, metrics_port = root / "audit.key", root / "audit", free_port()
    write_new_key_file(key_file)
    env = {"FLASHSIGHT_AUDIT_DIR": str(audit_dir), "FLASHSIGHT_AUDIT_KEY_FILE": str(key_file),
           "FLASHSIGHT_AUDIT_INCLUDE_IMAGES": "true", "FLASHSIGHT_METRICS_PORT": str(metrics_port)}  # fmt: skip
    with flashsight_server(tiny_model_dir, [], env) as base_url:
        yield base_url, audit_dir, key_file, metrics_port


def ask(base_url: str, content) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 3}
    return httpx.post(f"{base_url}{CHAT}", json=body, timeout=60)


def opened_records(capsys, audit_dir, key_file) -> list[dict]:
    code, out, err = run_logs(capsys, "show", "--dir", str(audit_dir), "--key", str(key_file))
    assert code == 0, err
    return jsonl(out)


def wait_for_sealed(capsys, audit_dir, key_file, marker: str) -> dict:
    for _ in range(200):
        found = [r for r in opened_records(capsys, audit_dir, key_file) if marker in json.dumps(r)]
        if found:
            return found[0]
    raise AssertionError("no sealed record was written")


def test_records_are_sealed_and_open_only_with_the_key(keyed, capsys):
    base_url, audit_dir, key_file, _ = keyed
    marker, png = f"sealed{uuid.uuid4().hex[:10]}", png_bytes((8, 8))
    content = [{"type": "text", "text": marker}, {"type": "image_url", "image_url": {"url": data_url(png)}}]
    assert ask(base_url, content).status_code == 200
    record = wait_for_sealed(capsys, audit_dir, key_file, marker)
    assert record["messages"][0]["text"] == marker
    assert record["messages"][0]["images"][0]["data_url"] == data_url(png)  # audit_include_images
    raw = "".join(f.path.read_text() for f in log_files(audit_dir))
    assert marker not in raw and "sha256" not in raw
    code, out, err = run_logs(capsys, "show", "--dir", str(audit_dir))
    assert code == 1 and out == "" and "the record is encrypted" in err


def test_a_tampered_live_record_is_detected(keyed, tmp_path, capsys):
    base_url, audit_dir, key_file, _ = keyed
    for _ in range(2):
        assert ask(base_url, "hello").status_code == 200
    copy = tmp_path / "copy"
    shutil.copytree(audit_dir, copy)  # tamper with a copy: the server keeps writing its own
    path = log_files(copy)[-1].path
    lines = path.read_text().splitlines()
    entry = json.loads(lines[-1])
    entry["nonce"] = json.loads(lines[0])["nonce"]
    lines[-1] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")
    code, out, err = run_logs(capsys, "show", "--dir", str(copy), "--key", str(key_file))
    assert code == 1
    assert f"{path.name} line {len(lines)}: authentication failed" in err
    assert len(out.splitlines()) == len(lines) - 1


def test_metrics_are_served_on_the_admin_port_only(keyed):
    base_url, _, _, metrics_port = keyed
    assert ask(base_url, "count me").status_code == 200
    exposition = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    assert 'flashsight_requests_total{status="200"}' in exposition
    assert httpx.get(f"{base_url}/metrics", timeout=10).status_code == 404


def test_an_unwritable_log_is_reported_and_requests_still_served(keyed, capsys):
    base_url, audit_dir, key_file, _ = keyed
    assert httpx.get(f"{base_url}/health").json()["audit"] == "ok"
    audit_dir.mkdir(exist_ok=True)  # when no test before this one has written a record
    moved = audit_dir.with_name("audit-moved")
    shutil.move(audit_dir, moved)
    audit_dir.write_text("not a folder")  # every write below it fails, even as root
    try:
        assert ask(base_url, "lost").status_code == 200
        for _ in range(200):
            if httpx.get(f"{base_url}/health").json()["audit"] == "failing":
                break
        health = httpx.get(f"{base_url}/health").json()
        assert (health["status"], health["ready"], health["audit"]) == ("ok", True, "failing")
        assert ask(base_url, "still served").status_code == 200
    finally:
        audit_dir.unlink()
        shutil.move(moved, audit_dir)
    marker = f"back{uuid.uuid4().hex[:10]}"
    assert ask(base_url, marker).status_code == 200
    wait_for_sealed(capsys, audit_dir, key_file, marker)
    assert httpx.get(f"{base_url}/health").json()["audit"] == "ok"
