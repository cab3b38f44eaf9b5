"""API keys: made once, shown once, stored as a SHA-256 digest, checked in constant time.

A key reads `fsk_<key id>_<secret>`. The id (not secret) finds the row; the secret's digest is
then compared with `hmac.compare_digest`, so the time a check takes does not depend on how much
of a guessed key is right. The secret holds 256 random bits: a fast hash is enough, no salt or
slow hash is needed against guessing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from flashsight.security.store import SecurityStore, StoreError, check_name

_KEY_SHAPE = re.compile(r"^fsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
# Compared against when the id is unknown, so a miss costs the same digest and compare as a hit.
_NO_SECRET_DIGEST = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    created_at: float
    revoked_at: float | None
    requests_per_minute: int | None  # None: the server's default limit
    tokens_per_minute: int | None


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, store: SecurityStore) -> None:
        self.store = store

    def create(self, name: str | None, requests_per_minute: int | None = None, tokens_per_minute: int | None = None) -> str:
        """Store a new key and return it in full: the only time it is ever seen."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        name = check_name(name or f"key-{key_id}")
        with self.store.connect() as db:
            if db.execute("SELECT 1 FROM api_keys WHERE name = ?", (name,)).fetchone():
                raise StoreError(f"a key named {name!r} exists already")
            db.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, NULL, ?, ?)",
                (key_id, name, secret_digest(secret), time.time(), requests_per_minute, tokens_per_minute),
            )
        return f"fsk_{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        with self.store.connect() as db:
            rows = db.execute(
                "SELECT key_id, name, created_at, revoked_at, requests_per_minute, tokens_per_minute"
                " FROM api_keys ORDER BY created_at"
            ).fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, name_or_id: str) -> str:
        """Revoke by name or key id; returns the key's name."""
        with self.store.connect() as db:
            row = db.execute(
                "SELECT key_id, name FROM api_keys WHERE (name = ? OR key_id = ?) AND revoked_at IS NULL",
                (name_or_id, name_or_id),
            ).fetchone()
            if row is None:
                raise StoreError(f"no active key is named {name_or_id[:80]!r}")
            db.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", (time.time(), row[0]))
        return row[1]

    def verify(self, presented: str) -> ApiKey | None:
        """The active key `presented` is, or None; the same work whether or not the id exists."""
        shape = _KEY_SHAPE.match(presented)
        key_id, secret = shape.groups() if shape else ("", presented)
        with self.store.connect() as db:
            row = db.execute(
                "SELECT key_id, name, created_at, revoked_at, requests_per_minute, tokens_per_minute, secret_sha256"
                " FROM api_keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        stored_digest = row[6] if row else _NO_SECRET_DIGEST
        matches = hmac.compare_digest(secret_digest(secret), stored_digest)
        if not (shape and row and matches) or row[3] is not None:
            return None
        return ApiKey(*row[:6])
