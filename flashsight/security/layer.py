"""`SecurityLayer`: the state the security checks share (stores, limiters, breaker, counters),
built once from the settings and kept on `app.state.security`."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from flashsight.security.breaker import CircuitBreaker
from flashsight.security.keys import ApiKey, KeyStore
from flashsight.security.network import in_networks, is_loopback_host, parse_address, parse_networks
from flashsight.security.principal import Principal
from flashsight.security.ratelimit import PerMinuteLimiter, Verdict
from flashsight.security.sessions import LoginSession, SessionStore
from flashsight.security.store import SecurityStore
from flashsight.security.users import UserStore
from flashsight.server.settings import ServerSettings

logger = logging.getLogger("flashsight.security")


@dataclass(frozen=True)
class Caller:
    """Who a request was authenticated as, and how (the key, for its own limits; the session, for CSRF)."""

    principal: Principal
    key: ApiKey | None = None
    session: LoginSession | None = None


class SecurityLayer:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.auth_required = settings.auth_enabled()
        store = SecurityStore(settings.database_path)
        self.keys = KeyStore(store)
        self.users = UserStore(store)
        self.sessions = SessionStore(store, settings.session_hours * 3600)
        self.allowed_networks = parse_networks(settings.allowed_networks)
        self.trusted_proxies = parse_networks(settings.trusted_proxies)
        self.requests = PerMinuteLimiter()
        self.tokens = PerMinuteLimiter()
        self.logins = PerMinuteLimiter()
        self.breaker = CircuitBreaker(settings.ban_after_failures, settings.ban_seconds)
        self.counters: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()

    # ---- who may call ----

    def is_allowed_address(self, client_ip: str) -> bool:
        return not self.allowed_networks or in_networks(parse_address(client_ip), self.allowed_networks)

    def limits_address(self, client_ip: str) -> bool:
        """Per-address limits and bans apply to everyone but loopback callers (unless configured)."""
        return self.settings.limit_loopback or not is_loopback_host(client_ip)

    # ---- budgets ----

    def take_requests(self, caller: Caller, client_ip: str) -> Verdict | None:
        """The tightest verdict on one more request (the key's and the address's); None: no limit."""
        verdicts = []
        if caller.key is not None:
            limit = _own_or(caller.key.requests_per_minute, self.settings.rate_limit_requests_per_minute)
            verdicts.append(self.requests.take(f"key:{caller.key.key_id}", limit))
        if self.limits_address(client_ip):
            verdicts.append(self.requests.take(f"ip:{client_ip}", self.settings.rate_limit_requests_per_minute))
        return self._tightest(verdicts)

    def take_tokens(self, caller: Caller, client_ip: str, tokens: int) -> Verdict | None:
        verdicts = []
        if caller.key is not None:
            limit = _own_or(caller.key.tokens_per_minute, self.settings.rate_limit_tokens_per_minute)
            verdicts.append(self.tokens.take(f"key:{caller.key.key_id}", limit, tokens))
        if self.limits_address(client_ip):
            verdicts.append(self.tokens.take(f"ip:{client_ip}", self.settings.rate_limit_tokens_per_minute, tokens))
        return self._tightest(verdicts)

    def _tightest(self, verdicts: list[Verdict]) -> Verdict | None:
        limited = [verdict for verdict in verdicts if verdict.limit > 0]
        if not limited:
            return None
        refused = [verdict for verdict in limited if not verdict.allowed]
        if refused:
            self.counters["rate_limit_rejections_total"] += 1
            return max(refused, key=lambda verdict: verdict.retry_after_s)
        return min(limited, key=lambda verdict: verdict.remaining)

    # ---- concurrent requests per client ----

    def try_enter(self, client: str) -> bool:
        with self._lock:
            if self._in_flight[client] >= self.settings.max_concurrent_requests_per_client:
                return False
            self._in_flight[client] += 1
            return True

    def leave(self, client: str) -> None:
        with self._lock:
            self._in_flight[client] -= 1
            if self._in_flight[client] <= 0:
                del self._in_flight[client]

    # ---- the breaker ----

    def record_outcome(self, connection: HTTPConnection, client_ip: str, status: int, failed: bool) -> None:
        if not self.limits_address(client_ip) or not self.breaker.record(client_ip, failed):
            return
        logger.warning("banned %s for %.0f s after %d failed requests in a row", client_ip,
                       self.settings.ban_seconds, self.settings.ban_after_failures)  # fmt: skip
        audit = getattr(connection.app.state, "audit", None)
        if audit is not None:
            audit.record_event("client_banned", client_ip=client_ip, failures=self.settings.ban_after_failures,
                               ban_seconds=self.settings.ban_seconds, last_status=status)  # fmt: skip

    def stats(self) -> dict[str, Any]:
        """What /v1/status shows under "security" and /metrics exports (contract 6)."""
        banned = self.breaker.banned_now()
        return {
            "auth_required": self.auth_required,
            "rate_limit_rejections_total": self.counters["rate_limit_rejections_total"],
            "auth_failures_total": self.counters["auth_failures_total"],
            "login_failures_total": self.counters["login_failures_total"],
            "bans_total": self.breaker.stats.bans_total,
            "banned_clients": len(banned),
            "banned_addresses": banned,
        }


def _own_or(own: int | None, default: int) -> int:
    return default if own is None else own
