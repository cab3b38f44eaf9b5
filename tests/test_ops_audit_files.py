"""The audit log on disk: durable appends, rotation by size and day, retention, encryption that
catches tampering, and a log that recovers once its disk does. Real files in a temporary folder;
only the clock is the test's, so a day can pass in a moment."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from flashsight.cli import main
from flashsight.ops.audit_crypto import RecordCipher, read_key_file, write_new_key_file
from flashsight.ops.audit_files import log_files
from flashsight.ops.audit_log import AuditLog

DAY = 86400.0
NOV_30 = 1_796_040_000.0  # 2026-11-30 12:00 UTC


class Clock:
    def __init__(self, now: float = NOV_30) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def names(directory) -> list[str]:
    return [f.name for f in log_files(directory)]


def lines_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def logs(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["logs", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_records_are_appended_one_per_line_with_a_time(tmp_path):
    log = AuditLog(tmp_path, clock=Clock())
    assert log.write({"kind": "request", "status": 200})
    assert log.record_event("ban", client_ip="10.0.0.1")
    [path] = [f.path for f in log_files(tmp_path)]
    first, second = lines_of(path)
    assert first == {"time": "2026-11-30T12:00:00.000+00:00", "kind": "request", "status": 200}
    assert second["kind"] == "ban" and second["client_ip"] == "10.0.0.1"
    assert log.records_written == 2 and log.state == "ok"


def test_secret_fields_never_reach_the_file(tmp_path):
    log = AuditLog(tmp_path, clock=Clock())
    log.record_event("login_failed", user="ann", password="hunter2", headers={"Authorization": "Bearer sk-1", "x": 1})
    text = log_files(tmp_path)[0].path.read_text()
    assert "hunter2" not in text and "sk-1" not in text
    assert lines_of(log_files(tmp_path)[0].path)[0]["headers"] == {"x": 1}


def test_files_rotate_by_size_and_by_day(tmp_path):
    clock = Clock()
    log = AuditLog(tmp_path, rotate_bytes=200, clock=clock)
    for i in range(6):
        log.write({"n": i, "padding": "x" * 60})
    assert names(tmp_path) == ["audit-2026-11-30.jsonl", "audit-2026-11-30.1.jsonl", "audit-2026-11-30.2.jsonl"]
    clock.now += DAY
    log.write({"n": 6})
    assert names(tmp_path)[-1] == "audit-2026-12-01.jsonl"
    numbers = [record["n"] for f in log_files(tmp_path) for record in lines_of(f.path)]
    assert numbers == list(range(7))


def test_a_restarted_log_continues_the_days_file(tmp_path):
    AuditLog(tmp_path, clock=Clock()).write({"n": 1})
    AuditLog(tmp_path, clock=Clock()).write({"n": 2})
    assert names(tmp_path) == ["audit-2026-11-30.jsonl"]
    assert [r["n"] for r in lines_of(log_files(tmp_path)[0].path)] == [1, 2]


def test_files_past_retention_are_deleted_and_recent_ones_kept(tmp_path):
    clock = Clock()
    old, recent = tmp_path / "audit-2026-10-01.jsonl", tmp_path / "audit-2026-11-25.jsonl"
    for path, age_days in ((old, 60), (recent, 5)):
        path.write_text('{"time": "x"}\n')
        os.utime(path, (clock.now - age_days * DAY, clock.now - age_days * DAY))
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("kept")
    AuditLog(tmp_path, retention_days=30, clock=clock).write({"n": 1})
    assert names(tmp_path) == ["audit-2026-11-25.jsonl", "audit-2026-11-30.jsonl"]
    assert unrelated.exists()


def test_an_unwritable_log_is_failing_until_a_record_goes_through(tmp_path):
    directory = tmp_path / "audit"
    log = AuditLog(directory, clock=Clock())
    assert log.write({"n": 1})
    shutil.move(directory, tmp_path / "moved")
    directory.write_text("a file where the folder was")  # even root cannot write below this
    assert not log.write({"n": 2})
    assert log.state == "failing" and log.write_failures == 1
    directory.unlink()
    shutil.move(tmp_path / "moved", directory)
    assert log.write({"n": 3})
    assert log.state == "ok"
    assert [r["n"] for r in lines_of(log_files(directory)[0].path)] == [1, 3]


def test_keygen_writes_a_private_key_and_never_overwrites_one(tmp_path, capsys):
    path = tmp_path / "audit.key"
    assert logs(capsys, "keygen", str(path))[0] == 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(read_key_file(path)) == 32
    before = path.read_bytes()
    code, _, err = logs(capsys, "keygen", str(path))
    assert code == 2 and "exists" in err
    assert path.read_bytes() == before


@pytest.fixture
def sealed_log(tmp_path):
    key_path = tmp_path / "audit.key"
    write_new_key_file(key_path)
    directory = tmp_path / "audit"
    log = AuditLog(directory, cipher=RecordCipher(read_key_file(key_path)), clock=Clock())
    for i in range(3):
        log.write({"kind": "request", "n": i, "output": f"secret answer {i}"})
    return directory, key_path, log_files(directory)[0].path


def test_sealed_records_read_back_only_with_the_key(sealed_log, capsys):
    directory, key_path, path = sealed_log
    assert "secret answer" not in path.read_text()
    code, out, err = logs(capsys, "show", "--dir", str(directory))
    assert code == 1 and out == ""
    assert "audit-2026-11-30.jsonl line 1: the record is encrypted" in err
    code, out, err = logs(capsys, "show", "--dir", str(directory), "--key", str(key_path))
    assert code == 0 and err == ""
    assert [json.loads(line)["output"] for line in out.splitlines()] == [f"secret answer {i}" for i in range(3)]


def test_an_altered_record_is_reported_by_line(sealed_log, capsys):
    directory, key_path, path = sealed_log
    lines = path.read_text().splitlines()
    entry = json.loads(lines[1])
    ciphertext = bytearray(entry["ciphertext"].encode())
    ciphertext[10] = ord("A") if ciphertext[10] != ord("A") else ord("B")
    entry["ciphertext"] = ciphertext.decode()
    lines[1] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")
    code, out, err = logs(capsys, "show", "--dir", str(directory), "--key", str(key_path))
    assert code == 1
    assert "line 2: authentication failed" in err
    assert [json.loads(line)["n"] for line in out.splitlines()] == [0, 2]


def test_reordered_records_fail_authentication(sealed_log, capsys):
    directory, key_path, path = sealed_log
    first, second, third = path.read_text().splitlines()
    path.write_text("\n".join([second, first, third]) + "\n")
    code, out, err = logs(capsys, "show", "--dir", str(directory), "--key", str(key_path))
    assert code == 1 and "line 1:" in err and "line 2:" in err
    assert [json.loads(line)["n"] for line in out.splitlines()] == [2]


def test_a_record_sealed_under_another_key_is_named_as_such(sealed_log, tmp_path, capsys):
    directory, _, _ = sealed_log
    other = tmp_path / "other.key"
    write_new_key_file(other)
    code, _, err = logs(capsys, "show", "--dir", str(directory), "--key", str(other))
    assert code == 1 and "line 1: sealed under another key" in err


def test_filters_pick_exactly_the_matching_records(tmp_path, capsys):
    clock = Clock()
    log = AuditLog(tmp_path, clock=clock)
    log.write({"kind": "request", "status": 200, "output": "a red apple"})
    clock.now += 3600
    log.write({"kind": "request", "status": 400, "error": "bad max_tokens"})
    clock.now += 3600
    log.write({"kind": "request", "status": 200, "output": "a green pear"})
    log.record_event("ban", client_ip="10.0.0.9")

    def search(*args: str) -> list[dict]:
        code, out, _ = logs(capsys, "search", "--dir", str(tmp_path), *args)
        assert code == 0
        return [json.loads(line) for line in out.splitlines()]

    assert [r.get("output") for r in search("--grep", "apple|pear")] == ["a red apple", "a green pear"]
    assert [r["status"] for r in search("--status", "4xx")] == [400]
    assert [r.get("output") for r in search("--status", "200")] == ["a red apple", "a green pear"]
    assert [r["kind"] for r in search("--status", "error")] == ["request"]
    assert len(search("--since", "2026-11-30T12:30", "--until", "2026-11-30T13:30")) == 1
    assert search("--grep", "^10\\.0\\.0\\.9$")[0]["kind"] == "ban"
    assert search("--grep", "status") == []  # field names are not searched, only values
    assert search("--grep", "RED", "-i")[0]["output"] == "a red apple"
    code, _, err = logs(capsys, "search", "--dir", str(tmp_path))
    assert code == 2 and "needs a filter" in err


def test_export_writes_csv_with_a_column_per_field(tmp_path, capsys):
    log = AuditLog(tmp_path / "audit", clock=Clock())
    log.write({"kind": "request", "status": 200, "output": "line one,\nline two", "messages": [{"text": "hi"}]})
    target = tmp_path / "out.csv"
    assert logs(capsys, "export", "--dir", str(tmp_path / "audit"), "--format", "csv", "-o", str(target))[0] == 0
    import csv

    [row] = list(csv.DictReader(target.open(newline="")))
    assert row["status"] == "200" and row["output"] == "line one,\nline two"
    assert json.loads(row["details"]) == {"messages": [{"text": "hi"}]}


def test_time_filters_accept_ages(tmp_path, capsys):
    log = AuditLog(tmp_path, clock=time.time)
    log.write({"kind": "request", "status": 200})
    code, out, _ = logs(capsys, "search", "--dir", str(tmp_path), "--since", "1h")
    assert code == 0 and len(out.splitlines()) == 1
    code, _, err = logs(capsys, "search", "--dir", str(tmp_path), "--since", "yesterday")
    assert code == 2 and "not a time" in err
