"""Page users: passwords hashed with Argon2id (argon2-cffi), never stored or logged in clear."""

from __future__ import annotations

import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from flashsight.security.store import SecurityStore, StoreError, check_name

MIN_PASSWORD_LENGTH = 8
_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs as long as a wrong password.
_ABSENT_USER_HASH = _hasher.hash("no such user")


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StoreError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return password


class UserStore:
    def __init__(self, store: SecurityStore) -> None:
        self.store = store

    def add(self, username: str, password: str) -> None:
        check_name(username, "user name")
        digest = _hasher.hash(check_password(password))
        with self.store.connect() as db:
            if db.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
                raise StoreError(f"the user {username!r} exists already")
            db.execute("INSERT INTO users VALUES (?, ?, ?)", (username, digest, time.time()))

    def remove(self, username: str) -> None:
        """Remove the user and end their sessions."""
        with self.store.connect() as db:
            if db.execute("DELETE FROM users WHERE username = ?", (username,)).rowcount == 0:
                raise StoreError(f"there is no user {username[:80]!r}")

    def set_password(self, username: str, password: str) -> None:
        """Change the password and end the user's sessions (whoever held one must log in again)."""
        digest = _hasher.hash(check_password(password))
        with self.store.connect() as db:
            changed = db.execute("UPDATE users SET password_hash = ? WHERE username = ?", (digest, username))
            if changed.rowcount == 0:
                raise StoreError(f"there is no user {username[:80]!r}")
            db.execute("DELETE FROM login_sessions WHERE username = ?", (username,))

    def names(self) -> list[str]:
        with self.store.connect() as db:
            return [row[0] for row in db.execute("SELECT username FROM users ORDER BY username")]

    def verify(self, username: str, password: str) -> bool:
        with self.store.connect() as db:
            row = db.execute("SELECT password_hash FROM users WHERE username = ?", (username,)).fetchone()
        try:
            return _hasher.verify(row[0] if row else _ABSENT_USER_HASH, password) and row is not None
        except (VerificationError, InvalidHashError):
            return False
