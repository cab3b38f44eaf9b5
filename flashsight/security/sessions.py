"""Page login sessions: a random cookie token (stored as its digest) with its own CSRF token."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from flashsight.security.store import SecurityStore

COOKIE_NAME = "flashsight_session"


@dataclass(frozen=True)
class LoginSession:
    username: str
    csrf_token: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, store: SecurityStore, lifetime_s: float) -> None:
        self.store = store
        self.lifetime_s = lifetime_s

    def start(self, username: str) -> tuple[str, LoginSession]:
        """A new session for `username`: the cookie's token, and the session it stands for."""
        token, csrf_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self.store.connect() as db:
            db.execute("DELETE FROM login_sessions WHERE expires_at < ?", (time.time(),))
            db.execute(
                "INSERT INTO login_sessions VALUES (?, ?, ?, ?)",
                (_digest(token), username, csrf_token, time.time() + self.lifetime_s),
            )
        return token, LoginSession(username, csrf_token)

    def find(self, token: str) -> LoginSession | None:
        """The live session this cookie token belongs to; looked up by digest, so no compare leaks."""
        with self.store.connect() as db:
            row = db.execute(
                "SELECT username, csrf_token FROM login_sessions WHERE token_sha256 = ? AND expires_at > ?",
                (_digest(token), time.time()),
            ).fetchone()
        return LoginSession(*row) if row else None

    def end(self, token: str) -> None:
        with self.store.connect() as db:
            db.execute("DELETE FROM login_sessions WHERE token_sha256 = ?", (_digest(token),))
