"""Helpers for the audit tests: a live server whose audit folder the test knows, and reading it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

from flashsight.cli import main
from flashsight.ops.audit_files import log_files

CHAT = "/v1/chat/completions"


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def plain_records(directory: Path) -> list[dict]:
    return [json.loads(line) for f in log_files(directory) for line in f.path.read_text().splitlines() if line]


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
