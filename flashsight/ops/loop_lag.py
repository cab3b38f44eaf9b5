"""How late the server's event loop runs what is due. Every request's every step (reading its body,
sending each token) waits its turn on that one loop, so a loop kept busy, or starved of the GIL by
the server's other threads, slows every stream at once; this probe is how an operator sees it."""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import Histogram

PROBE_INTERVAL_S = 0.05


class LoopLagProbe:
    """Sleeps `interval_s` over and over and observes how much later than asked it woke."""

    def __init__(self, histogram: Histogram, interval_s: float = PROBE_INTERVAL_S) -> None:
        self.histogram = histogram
        self.interval_s = interval_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """From inside the running loop (the app's lifespan)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="flashsight-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked_at = loop.time()
            await asyncio.sleep(self.interval_s)
            self.histogram.observe(max(0.0, loop.time() - asked_at - self.interval_s))
