"""`SecurityGate`: the pure-ASGI middleware every request passes (streams included).

In order: the client's address, header size, the allow-list, bans, credentials, CSRF, the request
budget, concurrent requests; then the app runs under the body and request timeouts, and the
outcome feeds the circuit breaker. Every answer carries the security headers (contract 7).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashsight.security.breaker import is_failure
from flashsight.security.credentials import AmbiguousCredentials, credentials_of
from flashsight.security.layer import Caller, SecurityLayer
from flashsight.security.network import resolve_client_ip
from flashsight.security.principal import ANONYMOUS, Principal
from flashsight.security.ratelimit import Verdict
from flashsight.server.errors import INVALID_REQUEST, SERVER_ERROR, APIError

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
# Contract 2: the only routes that answer without credentials when auth is on.
OPEN_GET_PATHS = frozenset({"/health", "/ready", "/", "/favicon.ico", "/auth/session"})
OPEN_POST_PATHS = frozenset({"/auth/login"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHAT_PATH = "/v1/chat/completions"


def is_open_route(method: str, path: str) -> bool:
    if method == "POST":
        return path in OPEN_POST_PATHS
    if method not in ("GET", "HEAD"):
        return False
    return path in OPEN_GET_PATHS or (path.startswith("/assets/") and _plain_asset_path(path))


def _plain_asset_path(path: str) -> bool:
    """No `..`, `.`, empty segment, backslash or left-over escape: nothing that could step out."""
    segments = path.split("/")[2:]
    return all(s not in ("", ".", "..") for s in segments) and "\\" not in path and "%" not in path


class SecurityGate:
    def __init__(self, app: ASGIApp, layer: SecurityLayer) -> None:
        self.app = app
        self.layer = layer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        peer = connection.client.host if connection.client else "unknown"
        client_ip = resolve_client_ip(peer, connection.headers.getlist("x-forwarded-for"), self.layer.trusted_proxies)
        scope.setdefault("state", {})["client_ip"] = client_ip
        if client_ip != peer and connection.headers.get("x-forwarded-proto") == "https":
            scope["scheme"] = "https"  # TLS ended at a trusted proxy: cookies are marked Secure
        exchange = _Exchange(receive, send, self.layer.settings.body_timeout_s)
        try:
            caller, verdict = self._admit(connection, client_ip)
        except APIError as error:
            await exchange.reject(scope, error)
            if error.code != "client_banned":
                self.layer.record_outcome(connection, client_ip, error.status, failed=True)
            return
        scope["state"]["principal"] = caller.principal
        scope["state"]["security_caller"] = caller
        exchange.extra_headers = verdict.headers("Requests") if verdict else {}
        await self._serve(connection, exchange, caller, client_ip)

    def _admit(self, connection: HTTPConnection, client_ip: str) -> tuple[Caller, Verdict | None]:
        self._check_headers(connection)
        layer = self.layer
        if not layer.is_allowed_address(client_ip):
            raise APIError(403, "Your address is not allowed to use this server.", code="address_not_allowed")
        if layer.limits_address(client_ip) and (left := layer.breaker.banned_for(client_ip)) > 0:
            message = "Too many failed requests from your address; it is blocked for a while."
            raise APIError(403, message, code="client_banned", headers={"Retry-After": str(int(left) + 1)})
        method, path = connection.scope["method"], connection.scope["path"]
        if is_open_route(method, path):
            return Caller(ANONYMOUS), None
        caller = self._authenticate(connection)
        if caller.session is not None:
            self._check_origin(connection)
            if method not in SAFE_METHODS:
                _check_csrf(connection, caller.session.csrf_token)
        verdict = layer.take_requests(caller, client_ip)
        if verdict is not None and not verdict.allowed:
            message = "Too many requests: slow down and retry after the time in Retry-After."
            raise APIError(429, message, code="rate_limit_exceeded", headers=verdict.headers("Requests"))
        return caller, verdict

    def _check_headers(self, connection: HTTPConnection) -> None:
        size = sum(len(name) + len(value) for name, value in connection.scope["headers"])
        if size > self.layer.settings.max_header_bytes:
            message = f"The request headers are larger than the server's limit of {self.layer.settings.max_header_bytes} bytes."
            raise APIError(431, message, code="headers_too_large")

    def _authenticate(self, connection: HTTPConnection) -> Caller:
        layer = self.layer
        if not layer.auth_required:
            return Caller(ANONYMOUS)
        try:
            credentials = credentials_of(connection.headers)
        except AmbiguousCredentials as exc:
            raise self._unauthorized(f"The credentials are ambiguous: {exc}.") from None
        if credentials.api_key is not None:
            key = layer.keys.verify(credentials.api_key)
            if key is None:
                raise self._unauthorized("The API key is not valid.", code="invalid_api_key")
            return Caller(Principal("key", key.name), key=key)
        if credentials.session_token is not None:
            session = layer.sessions.find(credentials.session_token)
            if session is None:
                raise self._unauthorized("The login session has ended; log in again.", code="session_expired")
            return Caller(Principal("user", session.username), session=session)
        message = "This server needs an API key: send 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'."
        raise self._unauthorized(message)

    def _check_origin(self, connection: HTTPConnection) -> None:
        """A page session used from another site's page is refused, whatever the method."""
        origin = connection.headers.get("origin")
        own = f"{connection.url.scheme}://{connection.headers.get('host', '')}"
        if origin is not None and origin != own and origin not in self.layer.settings.cors_origins:
            raise APIError(403, "Requests with a login session must come from this server's own page.",
                           code="foreign_origin")  # fmt: skip

    def _unauthorized(self, message: str, code: str = "missing_credentials") -> APIError:
        self.layer.counters["auth_failures_total"] += 1
        return APIError(401, message, code=code, headers={"WWW-Authenticate": "Bearer"})

    async def _serve(self, connection: HTTPConnection, exchange: _Exchange, caller: Caller, client_ip: str) -> None:
        scope = connection.scope
        counted = scope["method"] == "POST" and scope["path"] == CHAT_PATH
        slot = caller.principal.owner if caller.key else f"ip:{client_ip}"
        if counted and not self.layer.try_enter(slot):
            limit = self.layer.settings.max_concurrent_requests_per_client
            message = f"Too many requests at once: at most {limit} may run at a time per client."
            await exchange.reject(scope, APIError(429, message, code="too_many_concurrent_requests",
                                                  headers={"Retry-After": "1"}))  # fmt: skip
            return
        if counted:
            # Free the slot as the response's last byte goes out, before the client can see the
            # end: a client that sends its next request then must find the slot free, however
            # long the finished request's task takes to unwind on a busy event loop.
            exchange.on_complete = lambda: self.layer.leave(slot)
        try:
            await exchange.run(self.app, scope, self.layer.settings.request_timeout_s)
        finally:
            exchange.complete()
        failed = exchange.timed_out or is_failure(exchange.status)
        self.layer.record_outcome(connection, client_ip, exchange.status, failed)


def _check_csrf(connection: HTTPConnection, expected: str) -> None:
    sent = connection.headers.getlist("x-csrf-token")
    if len(sent) != 1 or not hmac.compare_digest(sent[0].encode(), expected.encode()):
        message = "This request needs the X-CSRF-Token header from GET /auth/session."
        raise APIError(403, message, code="csrf_token_invalid")


class BodyTimeout(Exception):
    """Raised from `receive` when the body has not arrived in time; the app's reply is dropped."""


class _Exchange:
    """One request's receive and send, wrapped: body deadline, status capture, extra headers."""

    def __init__(self, receive: Receive, send: Send, body_timeout_s: float) -> None:
        self._receive, self._send = receive, send
        self.body_timeout_s = body_timeout_s
        self.body_done = False
        self.extra_headers: dict[str, str] = {}
        self.status = 0
        self.timed_out = self.body_timed_out = False
        self.on_complete: Callable[[], None] | None = None  # called once, when the response ends
        self._deadline: float | None = None

    def complete(self) -> None:
        on_complete, self.on_complete = self.on_complete, None
        if on_complete is not None:
            on_complete()

    async def receive(self) -> Message:
        if self.body_done:
            return await self._receive()
        loop = asyncio.get_running_loop()
        self._deadline = self._deadline or loop.time() + self.body_timeout_s
        try:
            message = await asyncio.wait_for(self._receive(), max(0.0, self._deadline - loop.time()))
        except TimeoutError:
            self.body_timed_out = True
            raise BodyTimeout from None
        self.body_done = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if self.body_timed_out and not self.status:
            return  # whatever the app answers to BodyTimeout, the client gets our 408
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = MutableHeaders(scope=message)
            for name, value in {**SECURITY_HEADERS, **self.extra_headers}.items():
                headers[name] = value
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete()
        await self._send(message)

    async def run(self, app: ASGIApp, scope: Scope, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await app(scope, self.receive, self.send)
        except TimeoutError:
            self.timed_out = True
            if not self.status:
                message = "The request took longer than the server's limit and was stopped."
                await self.reject(scope, APIError(504, message, type=SERVER_ERROR, code="request_timeout"))
        except Exception:
            if not self.body_timed_out or self.status:
                raise
        if self.body_timed_out and not self.status:
            self.timed_out = True
            message = "The request body did not arrive in time."
            await self.reject(scope, APIError(408, message, type=INVALID_REQUEST, code="body_timeout",
                                              headers={"Connection": "close"}))  # fmt: skip

    async def reject(self, scope: Scope, error: APIError) -> None:
        self.body_timed_out = False  # our own answer must go through
        await error.response()(scope, self._receive, self.send)
