"""The circuit breaker: an address whose requests fail N times in a row is banned for a while.

Failures are answers of 400 and up (hostile probing, bad credentials, broken requests) and
timeouts; 429 is the rate limiter's own answer and 503 the server being busy, so neither counts.
Any success resets the count.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

NOT_FAILURES = frozenset({429, 503})


def is_failure(status: int) -> bool:
    return status >= 400 and status not in NOT_FAILURES


@dataclass
class BreakerStats:
    bans_total: int = 0
    banned_until: dict[str, float] = field(default_factory=dict)


class CircuitBreaker:
    def __init__(self, failures_to_ban: int, ban_seconds: float, clock=time.monotonic) -> None:
        self.failures_to_ban = failures_to_ban
        self.ban_seconds = ban_seconds
        self.stats = BreakerStats()
        self._consecutive: dict[str, int] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def banned_for(self, address: str) -> float:
        """Seconds left on this address's ban; 0 when it is not banned."""
        with self._lock:
            until = self.stats.banned_until.get(address)
            if until is None:
                return 0.0
            left = until - self._clock()
            if left <= 0:
                del self.stats.banned_until[address]
                return 0.0
            return left

    def record(self, address: str, failed: bool) -> bool:
        """Count one finished request; True when this failure is the one that bans the address."""
        if self.failures_to_ban <= 0:
            return False
        with self._lock:
            if not failed:
                self._consecutive.pop(address, None)
                return False
            count = self._consecutive.get(address, 0) + 1
            if count < self.failures_to_ban:
                self._consecutive[address] = count
                return False
            self._consecutive.pop(address, None)
            self.stats.banned_until[address] = self._clock() + self.ban_seconds
            self.stats.bans_total += 1
            return True

    def banned_now(self) -> list[str]:
        now = self._clock()
        with self._lock:
            return sorted(address for address, until in self.stats.banned_until.items() if until > now)
