"""The security layer's tables in the server's one SQLite file: `api_keys`, `users`, `login_sessions`.

A connection per call: handlers run on several threads and the CLI writes while the server reads;
WAL mode lets them do so without blocking each other.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_NAME_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    secret_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL,
    requests_per_minute INTEGER,
    tokens_per_minute INTEGER
);
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS login_sessions (
    token_sha256 TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""


class SecurityStore:
    """Opens the database file, creating it (owner-only) and the tables on first use."""

    def __init__(self, database_path: Path) -> None:
        self.database_path = database_path
        database_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.connect() as connection:
            connection.executescript(_SCHEMA)
        database_path.chmod(0o600)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.database_path, timeout=10)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA foreign_keys=ON")
            with connection:  # commits, or rolls back on an exception
                yield connection
        finally:
            connection.close()


class StoreError(ValueError):
    """What was asked cannot be done (a name taken, no such key or user); the message says why."""


def check_name(name: str, what: str = "name") -> str:
    if not _NAME_SHAPE.match(name):
        raise StoreError(f"the {what} {name[:80]!r} must be 1-64 letters, digits, '.', '_', '@' or '-'")
    return name
