"""Who is making a request: the one value the security layer hands to everything downstream.

The web history scopes conversations by `owner`, the audit log records `label`; neither needs to
know how the caller proved who they are (API key, page login, or nobody when auth is off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.requests import HTTPConnection

PrincipalKind = Literal["anonymous", "key", "user"]


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    name: str  # the key's or user's name; "local" for anonymous callers

    @property
    def owner(self) -> str:
        """A stable id for data that belongs to this caller (conversations, ...)."""
        return f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        """How logs name this caller; never a secret."""
        return "anonymous" if self.kind == "anonymous" else f"{self.kind} {self.name}"


ANONYMOUS = Principal(kind="anonymous", name="local")


def principal_of(connection: HTTPConnection) -> Principal:
    """The caller that the auth layer recorded on this request, or ANONYMOUS when auth is off."""
    return getattr(connection.state, "principal", ANONYMOUS)


def client_ip_of(connection: HTTPConnection) -> str:
    """The caller's address: what the security layer resolved (X-Forwarded-For from a trusted
    proxy), else the socket's peer. Rate limits, bans and the audit log all use this one value."""
    resolved = getattr(connection.state, "client_ip", None)
    if resolved:
        return resolved
    return connection.client.host if connection.client else "unknown"
