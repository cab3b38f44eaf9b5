"""Reading who a request claims to be: `Authorization: Bearer`, `X-Api-Key`, or the page's cookie.

Ambiguity is refused, not resolved: two Authorization headers, two X-Api-Key headers, or a Bearer
and an X-Api-Key that differ are all 401, so no proxy and no server can each read a different key.
"""

from __future__ import annotations

from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

from starlette.datastructures import Headers

from flashsight.security.sessions import COOKIE_NAME


class AmbiguousCredentials(Exception):
    """The request carries conflicting or malformed credentials."""


@dataclass(frozen=True)
class Credentials:
    api_key: str | None
    session_token: str | None


def credentials_of(headers: Headers) -> Credentials:
    bearer = _bearer(headers.getlist("authorization"))
    api_keys = headers.getlist("x-api-key")
    if len(api_keys) > 1:
        raise AmbiguousCredentials("more than one X-Api-Key header")
    header_key = api_keys[0] if api_keys else None
    if bearer is not None and header_key is not None and bearer != header_key:
        raise AmbiguousCredentials("Authorization and X-Api-Key carry different keys")
    return Credentials(api_key=bearer or header_key, session_token=_session_cookie(headers))


def _bearer(values: list[str]) -> str | None:
    if not values:
        return None
    if len(values) > 1:
        raise AmbiguousCredentials("more than one Authorization header")
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AmbiguousCredentials("Authorization must be 'Bearer <key>'")
    return token


def _session_cookie(headers: Headers) -> str | None:
    cookie = SimpleCookie()
    try:
        for value in headers.getlist("cookie"):
            cookie.load(value)
    except CookieError:
        return None
    morsel = cookie.get(COOKIE_NAME)
    return morsel.value if morsel is not None and morsel.value else None
