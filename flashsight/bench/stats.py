"""Per-level figures from the requests' results: percentiles, rates and errors."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from flashsight.bench.client import RequestResult


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100) with linear interpolation between closest ranks (numpy's default)."""
    if not 0 <= p <= 100:
        raise ValueError(f"a percentile is between 0 and 100, not {p}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LevelSummary:
    concurrency: int
    requests: int
    completed: int
    errors: int
    first_error: str | None
    duration_s: float
    ttft_s_p50: float | None
    ttft_s_p95: float | None
    e2e_s_p50: float | None
    e2e_s_p95: float | None
    requests_per_s: float
    output_tokens_per_s: float
    mean_output_tokens: float | None
    decode_tok_s_per_stream_p50: float | None
    usage_reported: bool  # False: output tokens were counted from text chunks, not the server's usage
    mean_jpeg_bytes: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(
    concurrency: int, results: Sequence[RequestResult], duration_s: float, mean_jpeg_bytes: float
) -> LevelSummary:
    done = [r for r in results if r.ok]
    failed = sorted((r for r in results if not r.ok), key=lambda r: r.index)
    ttfts = [r.ttft_s for r in done if r.ttft_s is not None]
    e2es = [r.e2e_s for r in done if r.e2e_s is not None]
    tokens = [r.output_tokens for r in done if r.output_tokens is not None]
    decode = [speed for r in done if (speed := r.decode_tok_s) is not None]
    return LevelSummary(
        concurrency=concurrency,
        requests=len(results),
        completed=len(done),
        errors=len(failed),
        first_error=failed[0].error if failed else None,
        duration_s=duration_s,
        ttft_s_p50=percentile(ttfts, 50),
        ttft_s_p95=percentile(ttfts, 95),
        e2e_s_p50=percentile(e2es, 50),
        e2e_s_p95=percentile(e2es, 95),
        requests_per_s=len(done) / duration_s if duration_s > 0 else 0.0,
        output_tokens_per_s=sum(tokens) / duration_s if duration_s > 0 else 0.0,
        mean_output_tokens=statistics.fmean(tokens) if tokens else None,
        decode_tok_s_per_stream_p50=percentile(decode, 50),
        usage_reported=bool(done) and all(r.usage_reported for r in done),
        mean_jpeg_bytes=mean_jpeg_bytes,
    )
