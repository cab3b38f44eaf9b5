"""`flashsight logs keygen|show|search|export`: make a key, and read the audit log back.

Exit status: 0 when every line read was a good record, 1 when any was not (encrypted without the
key, altered, moved or cut short: each is named on stderr by file and line), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_BAD_RECORDS, EXIT_USAGE = 0, 1, 2
_PROBLEMS_SHOWN = 20


def add_logs_command(commands: Any) -> None:
    logs = commands.add_parser("logs", help="read the audit log, or make its encryption key")
    actions = logs.add_subparsers(dest="logs_command", required=True, metavar="ACTION")
    keygen = actions.add_parser("keygen", help="write a new audit key file (mode 0600)")
    keygen.add_argument("path", help="the key file to create (never overwritten)")
    keygen.set_defaults(handler=keygen_command)
    for name, text in (("show", "print records"), ("search", "print the records that match a filter"),
                       ("export", "write records to a file")):  # fmt: skip
        reader = actions.add_parser(name, help=text)
        _add_reading_options(reader, export=name == "export")
        reader.set_defaults(handler=read_command, logs_command=name)


def _add_reading_options(parser: argparse.ArgumentParser, export: bool) -> None:
    parser.add_argument("--dir", help="the audit log's folder (default: the server's audit_dir setting)")
    parser.add_argument("--key", help="the key file of an encrypted log (default: FLASHSIGHT_AUDIT_KEY[_FILE])")
    parser.add_argument("--since", help="records at or after: 2026-11-30, 2026-11-30T14:00 or an age (2h, 7d)")
    parser.add_argument("--until", help="records at or before (same forms)")
    parser.add_argument("--status", help="HTTP statuses, comma-separated: 200, 4xx, 5xx, or error")
    parser.add_argument("--grep", help="a regular expression searched in each record's values (texts, ids, callers)")
    parser.add_argument("-i", "--ignore-case", action="store_true", help="--grep ignores case")
    parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    if export:
        parser.add_argument("--output", "-o", required=True, help="the file to write ('-' for standard output)")


def keygen_command(args: argparse.Namespace) -> int:
    from flashsight.ops.audit_crypto import write_new_key_file

    try:
        write_new_key_file(Path(args.path))
    except FileExistsError:
        return _fail(f"{args.path} exists; a key file is never overwritten.")
    except OSError as exc:
        return _fail(f"cannot write {args.path}: {exc.strerror or exc}.")
    print(f"flashsight: wrote a new audit key to {args.path}; serve with FLASHSIGHT_AUDIT_KEY_FILE={args.path}")
    return EXIT_OK


def read_command(args: argparse.Namespace) -> int:
    from flashsight.ops.audit_crypto import AuditKeyError
    from flashsight.ops.audit_reader import copy_matching

    from pydantic import ValidationError

    try:
        wanted = _filter(args)
        directory, cipher = _source(args)
    except ValidationError as exc:
        return _fail(f"invalid setting: {exc.errors(include_url=False)[0]['msg']}.")
    except (ValueError, AuditKeyError, re.error) as exc:
        return _fail(f"{exc}.")
    if args.logs_command == "search" and wanted.is_empty:
        return _fail("search needs a filter: --grep, --status, --since or --until.")
    if not directory.is_dir():
        return _fail(f"there is no audit log at {directory}.")
    out = sys.stdout if getattr(args, "output", "-") == "-" else open(args.output, "w", newline="", encoding="utf-8")
    try:
        reading = copy_matching(directory, cipher, wanted, out, args.format)
    finally:
        if out is not sys.stdout:
            out.close()
    return _report(reading.problems)


def _filter(args: argparse.Namespace):
    from flashsight.ops.audit_reader import RecordFilter, parse_statuses, parse_time

    return RecordFilter(
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        statuses=parse_statuses(args.status) if args.status else (),
        grep=re.compile(args.grep, re.MULTILINE | (re.IGNORECASE if args.ignore_case else 0)) if args.grep else None,
    )


def _source(args: argparse.Namespace):
    """The folder and the cipher: the flags first, else the server's own settings."""
    from flashsight.ops.audit_app import audit_key
    from flashsight.ops.audit_crypto import RecordCipher, read_key_file
    from flashsight.server.settings import ServerSettings

    settings = ServerSettings()
    key = read_key_file(Path(args.key)) if args.key else audit_key(settings)
    return (Path(args.dir) if args.dir else settings.audit_path), (RecordCipher(key) if key else None)


def _report(problems: list) -> int:
    for problem in problems[:_PROBLEMS_SHOWN]:
        print(f"flashsight: {problem}", file=sys.stderr)
    if len(problems) > _PROBLEMS_SHOWN:
        print(f"flashsight: ... and {len(problems) - _PROBLEMS_SHOWN} more bad lines", file=sys.stderr)
    return EXIT_BAD_RECORDS if problems else EXIT_OK


def _fail(message: str) -> int:
    print(f"flashsight: error: {message}", file=sys.stderr)
    return EXIT_USAGE
