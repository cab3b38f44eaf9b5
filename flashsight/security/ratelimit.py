"""Per-minute budgets (requests, tokens, login attempts) as token buckets kept in memory.

A bucket holds up to a minute's allowance and refills continuously, so a client may burst up to
its limit and then proceeds at the limit's pace. Idle buckets are dropped, so memory stays bounded
by the clients active in the last minute.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

_SWEEP_EVERY_S = 60.0


@dataclass
class _Bucket:
    level: float
    updated: float


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float  # until the amount asked for would fit; 0 when allowed

    def headers(self, kind: str) -> dict[str, str]:
        """OpenAI's names: x-ratelimit-limit-requests, ...-remaining-tokens, ...-reset-requests."""
        reset = f"{max(self.retry_after_s, 0.0):.3f}s"
        headers = {
            f"X-RateLimit-Limit-{kind}": str(self.limit),
            f"X-RateLimit-Remaining-{kind}": str(self.remaining),
            f"X-RateLimit-Reset-{kind}": reset,
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


class PerMinuteLimiter:
    """Buckets keyed by any string (a key id, an address, a user name)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._last_sweep = clock()

    def take(self, subject: str, per_minute: int, amount: int = 1) -> Verdict:
        """Spend `amount` from the subject's bucket if it holds that much; per_minute 0 = no limit."""
        if per_minute <= 0:
            return Verdict(True, 0, 0, 0.0)
        now = self._clock()
        rate = per_minute / 60.0
        with self._lock:
            self._sweep(now)
            bucket = self._buckets.setdefault(subject, _Bucket(float(per_minute), now))
            bucket.level = min(float(per_minute), bucket.level + (now - bucket.updated) * rate)
            bucket.updated = now
            # A request larger than a minute's worth waits for a full bucket; a peek (0) asks for 1.
            wanted = min(max(amount, 1), per_minute)
            if bucket.level >= wanted:
                bucket.level -= amount
                return Verdict(True, per_minute, max(0, int(bucket.level)), 0.0)
            return Verdict(False, per_minute, max(0, int(bucket.level)), (wanted - bucket.level) / rate)

    def peek(self, subject: str, per_minute: int) -> Verdict:
        """Whether one more would be allowed now, spending nothing."""
        return self.take(subject, per_minute, amount=0)

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < _SWEEP_EVERY_S:
            return
        self._last_sweep = now
        # A bucket untouched for a minute is full again: forgetting it changes nothing.
        self._buckets = {key: b for key, b in self._buckets.items() if now - b.updated < 60.0}
