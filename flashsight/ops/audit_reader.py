"""Reading the audit log back: every file in order, each line opened (when sealed) and checked,
filtered, and written out as JSONL or CSV. A line that does not open or parse is a `Problem`
naming its file and line; reading goes on past it."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from flashsight.ops.audit_crypto import RecordAuthenticationError, RecordCipher, is_sealed
from flashsight.ops.audit_files import log_files

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_STATUS = re.compile(r"^(?:[1-5]\d\d|[1-5]xx|error)$")
CSV_COLUMNS = ("time", "kind", "request_id", "caller", "client_ip", "model", "status", "error", "finish_reason",
               "prompt_tokens", "completion_tokens", "queue_s", "ttft_s", "latency_s", "output")  # fmt: skip


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.message}"


@dataclass(frozen=True)
class Entry:
    record: dict[str, Any]

    @property
    def searchable(self) -> str:
        """What --grep searches: every value in the record (texts, ids, names), one a line."""
        return "\n".join(_leaves(self.record))


@dataclass(frozen=True)
class RecordFilter:
    since: datetime | None = None
    until: datetime | None = None
    statuses: tuple[str, ...] = ()  # "200", "4xx", "error"
    grep: re.Pattern[str] | None = None

    @property
    def is_empty(self) -> bool:
        return self.since is None and self.until is None and not self.statuses and self.grep is None

    def matches(self, entry: Entry) -> bool:
        when = _time_of(entry.record)
        if (self.since or self.until) and when is None:
            return False
        if self.since and when < self.since or self.until and when > self.until:
            return False
        if self.statuses and not any(_status_matches(entry.record, wanted) for wanted in self.statuses):
            return False
        return self.grep is None or self.grep.search(entry.searchable) is not None


@dataclass
class Reading:
    """What a read found: how many records matched, and the lines that failed."""

    matched: int = 0
    problems: list[Problem] = field(default_factory=list)


def copy_matching(directory: Path, cipher: RecordCipher | None, wanted: RecordFilter, out: TextIO, fmt: str) -> Reading:
    """Write every matching record to `out` as "jsonl" or "csv", streaming (logs can be large)."""
    reading = Reading()
    write = _csv_rows(out) if fmt == "csv" else _jsonl_lines(out)
    for item in entries_of(directory, cipher):
        if isinstance(item, Problem):
            reading.problems.append(item)
        elif wanted.matches(item):
            write(item.record)
            reading.matched += 1
    return reading


def entries_of(directory: Path, cipher: RecordCipher | None) -> Iterator[Entry | Problem]:
    for log_file in log_files(directory):
        with open(log_file.path, encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield _entry(line, log_file.name, number, cipher)


def _entry(line: str, name: str, number: int, cipher: RecordCipher | None) -> Entry | Problem:
    try:
        entry = json.loads(line)
    except ValueError:
        return Problem(name, number, "not a JSON line (cut short, or altered)")
    if not isinstance(entry, dict):
        return Problem(name, number, "not a record")
    if not is_sealed(entry):
        return Entry(entry)
    if cipher is None:
        return Problem(name, number, "the record is encrypted; give the key (--key FILE or FLASHSIGHT_AUDIT_KEY)")
    try:
        text = cipher.open(entry, name, number)
    except RecordAuthenticationError as exc:
        return Problem(name, number, str(exc))
    return Entry(json.loads(text))


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise), or an age: "30m", "2h", "7d"."""
    relative = _RELATIVE.match(text.strip())
    if relative:
        age = timedelta(**{_UNITS[relative[2]]: int(relative[1])})
        return (now or datetime.now(UTC)) - age
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give 2026-11-30, 2026-11-30T14:00 or an age like 2h") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_statuses(text: str) -> tuple[str, ...]:
    statuses = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    for status in statuses:
        if not _STATUS.match(status):
            raise ValueError(f"{status!r} is not a status: give 200, 4xx or error (comma-separated)")
    return statuses


def _jsonl_lines(out: TextIO) -> Callable[[dict[str, Any]], None]:
    return lambda record: out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _csv_rows(out: TextIO) -> Callable[[dict[str, Any]], None]:
    """One row per record; fields without a column of their own go into `details` as JSON."""
    writer = csv.writer(out)
    writer.writerow((*CSV_COLUMNS, "details"))

    def write(record: dict[str, Any]) -> None:
        details = {k: v for k, v in record.items() if k not in CSV_COLUMNS}
        writer.writerow((*(_cell(record.get(name)) for name in CSV_COLUMNS), json.dumps(details, ensure_ascii=False)))

    return write


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif value is not None:
        yield str(value)


def _time_of(record: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(record["time"])
    except (KeyError, TypeError, ValueError):
        return None


def _status_matches(record: dict[str, Any], wanted: str) -> bool:
    if wanted == "error":
        return record.get("error") is not None
    status = record.get("status")
    if not isinstance(status, int):
        return False
    return str(status) == wanted or (wanted.endswith("xx") and str(status)[0] == wanted[0])
