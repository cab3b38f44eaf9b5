"""Prometheus metrics: request counters and latency histograms observed per request, and the
engine's and security layer's state read at scrape time. One registry per app, never the global
one, so every app (and every test) counts on its own."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flashsight.ops.audit_trace import RequestTrace

logger = logging.getLogger("flashsight.metrics")

_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_SHORT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

# Engine snapshot fields exported as gauges: (snapshot key, metric name, help).
_ENGINE_GAUGES = (
    ("waiting_requests", "flashsight_queue_depth", "Requests waiting for the engine."),
    ("running_requests", "flashsight_running_requests", "Requests generating now."),
    ("kv_blocks_used", "flashsight_kv_cache_blocks_used", "KV-cache blocks in use."),
    ("kv_blocks_total", "flashsight_kv_cache_blocks_total", "KV-cache blocks in all."),
    ("prefix_cache_hit_rate", "flashsight_prefix_cache_hit_rate", "Share of prompt blocks found in the prefix cache."),
    ("image_cache_hit_rate", "flashsight_image_cache_hit_rate", "Share of images found in the vision-output cache."),
)
# Engine counters: (snapshot key, metric name without _total, help).
_ENGINE_COUNTERS = (
    ("engine_restarts", "flashsight_engine_restarts", "Times the engine was restarted."),
    ("preemptions", "flashsight_preemptions", "Requests paused for lack of KV-cache blocks."),
    ("prefix_cache_queries", "flashsight_prefix_cache_queries", "Prompt blocks looked up in the prefix cache."),
    ("prefix_cache_hits", "flashsight_prefix_cache_hits", "Prompt blocks found in the prefix cache."),
    ("image_cache_hits", "flashsight_image_cache_hits", "Images found in the vision-output cache."),
    ("image_cache_misses", "flashsight_image_cache_misses", "Images not found in the vision-output cache."),
    ("gpu_busy_s", "flashsight_engine_gpu_busy_seconds", "Device time spent on the engine's steps."),
    ("gpu_wait_s", "flashsight_engine_gpu_wait_seconds",
     "Device time idle between the engine's steps while it had requests: the engine's own thread held it back."),
)
# The security layer's statistics (contract 6): (stats key, metric name, kind, help).
_SECURITY_SERIES = (
    ("rate_limit_rejections_total", "flashsight_rate_limit_rejections", "counter", "Requests refused by a rate limit."),
    ("bans_total", "flashsight_bans", "counter", "Clients banned."),
    ("banned_clients", "flashsight_banned_clients", "gauge", "Bans in force."),
    ("auth_failures_total", "flashsight_auth_failures", "counter", "Requests with bad or missing credentials."),
)


class ServerMetrics:
    """What `/metrics` exports for one app."""

    def __init__(self, app_state: Any) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("flashsight_requests", "Chat requests, by HTTP status.", ["status"], registry=r)
        self.ttft = Histogram("flashsight_time_to_first_token_seconds", "From the request's arrival to its first token.",
                              buckets=_TTFT_BUCKETS, registry=r)  # fmt: skip
        self.inter_token = Histogram("flashsight_inter_token_latency_seconds", "Between successive output tokens.",
                                     buckets=_INTER_TOKEN_BUCKETS, registry=r)  # fmt: skip
        self.latency = Histogram("flashsight_request_duration_seconds", "From the request's arrival to its last byte.",
                                 buckets=_REQUEST_BUCKETS, registry=r)  # fmt: skip
        self.queue_time = Histogram("flashsight_queue_time_seconds", "Time a request waited for the engine.",
                                    buckets=_TTFT_BUCKETS, registry=r)  # fmt: skip
        self.phases = Histogram("flashsight_time_to_first_token_phase_seconds",
                                "The time to first token by stage (receive, handoff, prepare, queue, prefill, delivery).",
                                ["phase"], buckets=_TTFT_BUCKETS, registry=r)  # fmt: skip
        self.loop_lag = Histogram("flashsight_event_loop_lag_seconds",
                                  "How much later than due the server's event loop ran a timer.",
                                  buckets=_SHORT_BUCKETS, registry=r)  # fmt: skip
        self.audit_write = Histogram("flashsight_audit_write_seconds",
                                     "From a request's end to its audit record on disk.",
                                     buckets=_SHORT_BUCKETS, registry=r)  # fmt: skip
        self.prompt_tokens = Counter("flashsight_prompt_tokens", "Prompt tokens of finished requests.", registry=r)
        self.completion_tokens = Counter("flashsight_generation_tokens", "Tokens generated.", registry=r)
        r.register(_StateCollector(app_state))

    def observe(self, trace: RequestTrace, status: int, duration_s: float) -> None:
        self.requests.labels(status=str(status)).inc()
        self.latency.observe(duration_s)
        if trace.ttft_s is not None:
            self.ttft.observe(trace.ttft_s)
        for gap in trace.token_gaps:
            self.inter_token.observe(gap)
        if trace.queued_s is not None:
            self.queue_time.observe(trace.queued_s)
        for phase, seconds in trace.phases().items():
            self.phases.labels(phase=phase).observe(seconds)
        if trace.last_event is not None:
            self.prompt_tokens.inc(trace.last_event.prompt_tokens)
            self.completion_tokens.inc(trace.last_event.completion_tokens)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Reads the engine's snapshot, the security layer's statistics and the audit log's counts
    from the app's state at each scrape."""

    def __init__(self, app_state: Any) -> None:
        self.state = app_state

    def collect(self) -> Iterator[Metric]:
        engine = _safely(self.state.engine.snapshot)
        for key, name, help_text in _ENGINE_GAUGES:
            yield _gauge(name, help_text, engine.get(key))
        for key, name, help_text in _ENGINE_COUNTERS:
            yield _counter(name, help_text, engine.get(key, 0 if key == "engine_restarts" else None))
        used, total = engine.get("kv_blocks_used"), engine.get("kv_blocks_total")
        yield _gauge("flashsight_kv_cache_usage_ratio", "Share of KV-cache blocks in use.", used / total if total else None)
        memory = engine.get("gpu_memory") or {}
        yield _gauge("flashsight_gpu_memory_used_bytes", "GPU memory in use (every process's).", memory.get("used_bytes"))
        yield _gauge("flashsight_gpu_memory_total_bytes", "GPU memory in all.", memory.get("total_bytes"))
        yield _counter("flashsight_gpu_allocator_retries", "Times the engine's GPU allocator ran short, freed its "
                       "cache and tried again (each waits for the whole GPU).", memory.get("allocator_retries"))
        yield from self._security()
        yield from self._audit()

    def _security(self) -> Iterator[Metric]:
        source = getattr(self.state, "security_stats", None)
        stats = _safely(source) if source is not None else {}
        for key, name, kind, help_text in _SECURITY_SERIES:
            value = stats.get(key, 0)  # no security layer: nothing refused, nobody banned
            yield _counter(name, help_text, value) if kind == "counter" else _gauge(name, help_text, value)


    def _audit(self) -> Iterator[Metric]:
        audit = getattr(self.state, "audit", None)
        if audit is None:
            return
        yield _counter("flashsight_audit_records", "Audit records written.", audit.records_written)
        yield _counter("flashsight_audit_write_failures", "Audit records that could not be written.", audit.write_failures)
        yield _counter("flashsight_audit_commits", "Writes to disk (fsyncs) of the audit log; records share them.",
                       audit.commits)  # fmt: skip
        yield _gauge("flashsight_audit_failing", "1 while the audit log cannot be written.", int(audit.failing))


def _gauge(name: str, help_text: str, value: float | None) -> Metric:
    family = GaugeMetricFamily(name, help_text)
    if value is not None:
        family.add_metric([], float(value))
    return family


def _counter(name: str, help_text: str, value: float | None) -> Metric:
    family = CounterMetricFamily(name, help_text)
    if value is not None:
        family.add_metric([], float(value))
    return family


def _safely(read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A scrape never fails because one source did; that source's series are left empty."""
    try:
        return dict(read())
    except Exception:
        logger.exception("a metrics source failed; its series are empty in this scrape")
        return {}


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
