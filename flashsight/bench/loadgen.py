"""The closed loop: `concurrency` clients, each sending its next request as soon as its last one
ended, until the level's requests are all sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import aiohttp

from flashsight.bench.client import RequestResult, send
from flashsight.bench.workloads import PreparedRequest


async def closed_loop(
    session: aiohttp.ClientSession, url: str, requests: Sequence[PreparedRequest], concurrency: int
) -> tuple[list[RequestResult], float]:
    """Send every request, at most `concurrency` at a time; the results (in request order) and the
    wall time from the first send to the last stream's end."""
    queue = iter(requests)
    results: list[RequestResult] = []

    async def one_client() -> None:
        for request in queue:  # a shared iterator: each request goes to whichever client is free
            results.append(await send(session, url, request))

    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(min(concurrency, len(requests)))))
    duration = time.perf_counter() - start
    return sorted(results, key=lambda result: result.index), duration
