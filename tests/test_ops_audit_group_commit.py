"""Group commit in the audit log: records written at once by many threads share an fsync, yet each
is its own line (sealed to its own line number) and on disk before its `write` returns; a batch
that fails fails every writer in it, and the log recovers with the next write. Real files in a
temporary folder; fsync is only made slow, so that writers pile up as they do on a slow disk."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest

from flashsight.ops.audit_crypto import RecordCipher
from flashsight.ops.audit_files import log_files
from flashsight.ops.audit_log import AuditLog
from flashsight.ops.audit_reader import Entry, entries_of

THREADS, EACH = 16, 25


@pytest.fixture
def slow_fsync(monkeypatch):
    """Every fsync (the log's among them) takes 5 ms longer, as on a slow disk."""
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        time.sleep(0.005)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)


def write_at_once(log: AuditLog, threads: int = THREADS, each: int = EACH) -> list[bool]:
    """Every thread's outcomes, the threads started together."""
    start, results = threading.Barrier(threads), []

    def writer(t: int) -> None:
        start.wait()
        outcomes = [log.write({"kind": "request", "thread": t, "n": n}) for n in range(each)]
        results.extend(outcomes)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


def test_concurrent_records_are_each_written_once_and_share_fsyncs(tmp_path, slow_fsync):
    log = AuditLog(tmp_path)
    assert all(write_at_once(log))
    lines = [line for f in log_files(tmp_path) for line in f.path.read_text().splitlines()]
    written = sorted((record["thread"], record["n"]) for record in map(json.loads, lines))
    assert written == [(t, n) for t in range(THREADS) for n in range(EACH)]
    assert log.records_written == THREADS * EACH
    assert 0 < log.commits < log.records_written


def test_concurrent_sealed_records_each_open_with_their_own_line_number(tmp_path, slow_fsync):
    cipher = RecordCipher(os.urandom(32))
    log = AuditLog(tmp_path, cipher=cipher, rotate_bytes=20_000)  # batches cross into new files too
    assert all(write_at_once(log))
    read = list(entries_of(tmp_path, cipher))  # a line opens only at the file and line it was sealed for
    assert all(isinstance(item, Entry) for item in read), [item for item in read if not isinstance(item, Entry)]
    assert len(read) == THREADS * EACH and len(log_files(tmp_path)) > 1
    assert log.commits < log.records_written


def test_a_failing_batch_fails_every_writer_in_it_until_the_fault_is_gone(tmp_path, slow_fsync):
    log = AuditLog(tmp_path)
    assert log.write({"n": "first"})
    path = log_files(tmp_path)[0].path
    shutil.move(path, tmp_path / "kept")
    path.mkdir()  # opening a folder for append fails, even as root
    assert not any(write_at_once(log, threads=8, each=5))
    assert log.write_failures == 40 and log.failing and log.records_written == 1
    path.rmdir()
    shutil.move(tmp_path / "kept", path)
    assert log.write({"n": "again"})
    assert not log.failing and log.records_written == 2
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == ["first", "again"]
