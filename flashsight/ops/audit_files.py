"""How the audit log's files are named and ordered: `audit-2026-11-30.jsonl`, then
`audit-2026-11-30.1.jsonl`, `.2`... when a day's file passes the size limit."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^audit-(\d{4}-\d{2}-\d{2})(?:\.(\d+))?\.jsonl$")


@dataclass(frozen=True, order=True)
class LogFile:
    day: str  # YYYY-MM-DD, UTC, when the file was started
    index: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


def file_name(day: str, index: int) -> str:
    return f"audit-{day}.jsonl" if index == 0 else f"audit-{day}.{index}.jsonl"


def log_files(directory: Path) -> list[LogFile]:
    """The directory's audit files, oldest first (other files are left alone)."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_file():
            found.append(LogFile(match[1], int(match[2] or 0), path))
    return sorted(found)
