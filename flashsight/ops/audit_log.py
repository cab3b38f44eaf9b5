"""The audit log: append-only JSONL files, one record a line, each on disk before `write` returns.

Every record is on disk (written, flushed and fsync'd) before its `write` returns, so a crash loses
nothing. Writes commit as a group: records that arrive while a write is in progress share the next
fsync, one line each (the file is opened for each commit, so a log file removed or replaced by an
operator is simply started again). Files rotate by size and by (UTC) day; files not written for
`retention_days` are deleted. A record that cannot be written (a full disk, an unwritable
directory) is counted and makes the log `failing` until the next record goes through; the server
decides whether to keep serving.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flashsight.ops.audit_crypto import RecordCipher
from flashsight.ops.audit_files import LogFile, file_name, log_files

logger = logging.getLogger("flashsight.audit")

# Field names that must never be written, wherever they appear in a record (events come from
# other layers, which might pass along more than they should).
SECRET_FIELDS = frozenset({"api_key", "authorization", "cookie", "cookies", "password", "secret", "token",
                           "set-cookie", "csrf_token", "session"})  # fmt: skip


class AuditLog:
    def __init__(
        self,
        directory: Path,
        cipher: RecordCipher | None = None,
        rotate_bytes: int = 100 * 2**20,
        rotate_daily: bool = True,
        retention_days: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.cipher = cipher
        self.rotate_bytes = rotate_bytes
        self.rotate_daily = rotate_daily
        self.retention_days = retention_days
        self.clock = clock
        self.records_written = 0
        self.write_failures = 0
        self.failing = False
        self.commits = 0  # batches fsync'd: records_written / commits records share an fsync
        self._lock = threading.Lock()  # held by the one thread committing a batch
        self._pending_lock = threading.Lock()  # held only to add to or take the pending list
        self._pending: list[_Pending] = []
        self._current: LogFile | None = None
        self._lines = 0  # lines in the current file (the next record's line number is one more)
        self._size = 0  # bytes of the current file that hold complete lines

    @property
    def state(self) -> str:
        return "failing" if self.failing else "ok"

    def record_event(self, kind: str, **fields: Any) -> bool:
        """A record for something that is not a request (a ban, ...); contract 6."""
        return self.write({"kind": kind, **fields})

    def write(self, record: dict[str, Any]) -> bool:
        """Append one record (a `time` is added when missing); False if it could not be written."""
        entry = {"time": self.timestamp(), **without_secrets(record)}
        # Serialized here, so a record that cannot be turned into JSON fails its own caller only.
        pending = _Pending(json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str))
        with self._pending_lock:
            self._pending.append(pending)
        with self._lock:
            # A thread that held this lock before us may have taken our record into its batch; it
            # then held the lock until the batch was on disk (or failed), so the outcome is known.
            if not pending.taken:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                for each in batch:
                    each.taken = True
                self._commit(batch)
        return pending.written

    def close(self) -> None:
        """Wait for a write in progress; every record written is already on disk."""
        with self._lock:
            self._current = None

    def timestamp(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="milliseconds")

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            self._append([each.text for each in batch])
        except OSError as exc:
            self.write_failures += len(batch)
            if not self.failing:
                logger.error("the audit log cannot be written (%s): records are being lost", exc.strerror or exc)
            self.failing = True
            return
        if self.failing:
            logger.warning("the audit log is being written again")
        self.failing = False
        self.records_written += len(batch)
        self.commits += 1
        for each in batch:
            each.written = True

    def _append(self, texts: list[str]) -> None:
        target = self._target()
        if self.cipher is not None:
            # Each line is sealed to its own place, so records cannot be moved about unnoticed.
            texts = [self.cipher.seal(text, target.name, self._lines + n) for n, text in enumerate(texts, start=1)]
        data = "".join(text + "\n" for text in texts).encode()
        with open(target.path, "ab") as file:
            if file.tell() > self._size:
                file.truncate(self._size)  # the torn end of a write that failed
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        self._lines += len(texts)
        self._size += len(data)

    def _target(self) -> LogFile:
        today = self._today()
        current = self._current if self._current is not None and self._still_ours(self._current) else None
        if current is None:
            current = self._resume(today)
        if current is None or (self.rotate_daily and current.day != today) or self._size >= self.rotate_bytes:
            current = self._start_file(today)
        self._current = current
        return current

    def _still_ours(self, current: LogFile) -> bool:
        """False once someone removed the file or cut it short: its line numbers no longer hold."""
        size = _size_of(current.path)
        return size is not None and size >= self._size

    def _resume(self, today: str) -> LogFile | None:
        """The newest existing file, if records may still go there (after a restart)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._delete_expired()
        files = log_files(self.directory)
        if not files or (self.rotate_daily and files[-1].day != today):
            return None
        newest = files[-1]
        content = newest.path.read_bytes()
        if content and not content.endswith(b"\n"):  # a crash mid-line: end it, so it stays one bad line
            with open(newest.path, "ab") as file:
                file.write(b"\n")
            content += b"\n"
        self._lines, self._size = content.count(b"\n"), len(content)
        return newest

    def _start_file(self, today: str) -> LogFile:
        self._delete_expired()
        taken = [f.index for f in log_files(self.directory) if f.day == today]
        index = max(taken) + 1 if taken else 0
        path = self.directory / file_name(today, index)
        path.touch(mode=0o600)
        _sync_directory(self.directory)  # the new name survives a crash too
        self._lines = self._size = 0
        return LogFile(today, index, path)

    def _delete_expired(self) -> None:
        if not self.retention_days:
            return
        cutoff = self.clock() - self.retention_days * 86400
        for old in log_files(self.directory):
            if old != self._current and old.path.stat().st_mtime < cutoff:
                old.path.unlink(missing_ok=True)
                logger.info("deleted the expired audit file %s", old.name)

    def _today(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d")


class _Pending:
    """A record waiting for a commit; `written` stays False unless its batch reached the disk."""

    __slots__ = ("taken", "text", "written")

    def __init__(self, text: str) -> None:
        self.text = text
        self.taken = False  # set, under the commit lock, by the thread that commits it
        self.written = False


def without_secrets(value: Any) -> Any:
    """The value with every secret-named field left out, however deep."""
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items() if str(k).lower() not in SECRET_FIELDS}
    if isinstance(value, list | tuple):
        return [without_secrets(v) for v in value]
    return value


def _size_of(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
