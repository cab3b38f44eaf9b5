"""Helpers for the audit tests: a live server whose audit folder the test knows, and reading it."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from flashsight.cli import main
from flashsight.ops.audit_files import log_files

CHAT = "/v1/chat/completions"


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def jsonl(text: str) -> list[dict]:
    """JSON lines split at "\n" only: a model's output may hold U+2028 or U+0085, which JSON leaves
    as they are and `str.splitlines` would take for line ends."""
    return [json.loads(line) for line in text.split("\n") if line]


def plain_records(directory: Path) -> list[dict]:
    return [record for f in log_files(directory) for record in jsonl(f.path.read_text())]


def wait_for_record(directory: Path, matches: Callable[[dict], bool], read=plain_records) -> dict:
    """The first record that matches, once the server has written it (records land just after
    the response ends)."""
    for _ in range(200):
        found = [record for record in read(directory) if matches(record)]
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no such audit record was written")


def mentions(word: str) -> Callable[[dict], bool]:
    return lambda record: any(word in m.get("text", "") for m in record.get("messages", []))


def run_logs(capsys, *args: str) -> tuple[int, str, str]:
    """`flashsight logs ...` as the command line runs it; (exit status, stdout, stderr)."""
    code = main(["logs", *args])
    out, err = capsys.readouterr()
    return code, out, err


def word() -> str:
    """A word no other request uses, to find this test's records by."""
    return f"marker{uuid.uuid4().hex[:12]}"


def search_log(capsys, directory: Path, marker: str, count: int) -> list[dict]:
    """The records `flashsight logs search --grep MARKER` prints, in the order they were written,
    once `count` records mention it (each lands just after its response ends)."""
    for _ in range(200):
        if len([record for record in plain_records(directory) if mentions(marker)(record)]) >= count:
            break
        time.sleep(0.05)
    code, out, err = run_logs(capsys, "search", "--dir", str(directory), "--grep", marker)
    assert code == 0 and err == "", err
    found = jsonl(out)
    assert len(found) == count, found
    return found
