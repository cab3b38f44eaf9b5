"""`/metrics` on the live server: every series the operations issue lists is exposed, and the
values move with traffic. Each app counts in its own registry."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

SERIES = (
    "flashsight_requests", "flashsight_time_to_first_token_seconds", "flashsight_inter_token_latency_seconds",
    "flashsight_request_duration_seconds", "flashsight_queue_time_seconds", "flashsight_prompt_tokens",
    "flashsight_generation_tokens", "flashsight_queue_depth", "flashsight_running_requests",
    "flashsight_kv_cache_blocks_used", "flashsight_kv_cache_usage_ratio", "flashsight_prefix_cache_hit_rate",
    "flashsight_image_cache_hit_rate", "flashsight_gpu_memory_used_bytes", "flashsight_engine_restarts",
    "flashsight_rate_limit_rejections", "flashsight_bans", "flashsight_banned_clients", "flashsight_audit_records",
    "flashsight_time_to_first_token_phase_seconds", "flashsight_event_loop_lag_seconds",
    "flashsight_audit_write_seconds", "flashsight_audit_commits", "flashsight_engine_gpu_busy_seconds",
    "flashsight_engine_gpu_wait_seconds",
)  # fmt: skip
PHASES = ("receive", "handoff", "prepare", "queue", "prefill", "delivery")


def scrape(base_url: str) -> dict[str, float]:
    """Every sample, keyed by name and labels, e.g. 'flashsight_requests_total{status="200"}'."""
    response = httpx.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def families(base_url: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics").text)}


def test_every_series_is_exposed(live_server):
    assert set(SERIES) <= families(live_server)


def test_values_move_with_traffic(live_server, client, model_id):
    before = scrape(live_server)
    ask = {"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
           "extra_body": {"ignore_eos": True}}  # fmt: skip
    for _ in range(2):
        client.chat.completions.create(**ask)
    list(client.chat.completions.create(**ask, stream=True))
    bad = httpx.post(f"{live_server}/v1/chat/completions", json={"messages": [], "max_tokens": 0}, timeout=30)
    assert bad.status_code == 400
    after = scrape(live_server)

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert grew('flashsight_requests_total{status="200"}') == 3
    assert grew('flashsight_requests_total{status="400"}') == 1
    assert grew("flashsight_generation_tokens_total") == 12
    assert grew("flashsight_prompt_tokens_total") > 0
    assert grew("flashsight_time_to_first_token_seconds_count") == 3
    assert grew("flashsight_inter_token_latency_seconds_count") == 9  # three tokens after each first
    assert grew("flashsight_request_duration_seconds_count") == 4
    assert grew("flashsight_queue_time_seconds_count") == 3
    for phase in PHASES:  # each served request's first token, stage by stage
        assert grew(f'flashsight_time_to_first_token_phase_seconds_count{{phase="{phase}"}}') == 3
    phase_sum = sum(grew(f'flashsight_time_to_first_token_phase_seconds_sum{{phase="{phase}"}}') for phase in PHASES)
    assert abs(phase_sum - grew("flashsight_time_to_first_token_seconds_sum")) < 1e-3
    assert grew("flashsight_audit_records_total") >= 4
    assert 1 <= grew("flashsight_audit_commits_total") <= grew("flashsight_audit_records_total")
    assert grew("flashsight_event_loop_lag_seconds_count") > 0  # the probe runs all the time
    assert after["flashsight_kv_cache_blocks_total"] > 0
    assert after["flashsight_engine_restarts_total"] >= 0
    assert grew("flashsight_engine_gpu_busy_seconds_total") > 0  # the device (here the CPU) ran the steps
    assert grew("flashsight_engine_gpu_wait_seconds_total") >= 0
    # The last record may still be on its way to disk after its answer was sent.
    deadline = time.monotonic() + 10
    while grew("flashsight_audit_write_seconds_count") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
        after = scrape(live_server)
    assert grew("flashsight_audit_write_seconds_count") == 4


def test_the_engine_gauges_follow_the_engine(live_server, client, model_id):
    status = httpx.get(f"{live_server}/v1/status").json()["engine"]
    samples = scrape(live_server)
    assert samples["flashsight_kv_cache_blocks_total"] == status["kv_blocks_total"]
    assert samples["flashsight_running_requests"] == 0 and samples["flashsight_queue_depth"] == 0


def test_each_app_counts_in_its_own_registry():
    from types import SimpleNamespace

    from flashsight.ops.audit_trace import RequestTrace
    from flashsight.ops.metrics import ServerMetrics

    engine = SimpleNamespace(snapshot=lambda: {"kv_blocks_total": 10, "kv_blocks_used": 5})
    apps = [ServerMetrics(SimpleNamespace(engine=engine)) for _ in range(2)]
    apps[0].observe(RequestTrace(), 200, 0.5)
    first, second = (metrics.exposition().decode() for metrics in apps)
    assert 'flashsight_requests_total{status="200"} 1.0' in first
    assert 'flashsight_requests_total{status="200"}' not in second
    assert "flashsight_kv_cache_usage_ratio 0.5" in first


def test_the_allocators_retries_are_a_counter():
    """The engine's GPU allocator retries (each a wait for the whole GPU) reach /metrics as a
    counter; off a GPU, where the snapshot has no GPU memory, the series has no sample."""
    from types import SimpleNamespace

    from flashsight.ops.metrics import ServerMetrics

    memory = {"used_bytes": 6, "total_bytes": 10, "allocator_retries": 3}
    on_gpu = SimpleNamespace(snapshot=lambda: {"gpu_memory": memory})
    off_gpu = SimpleNamespace(snapshot=lambda: {"gpu_memory": None})
    exposed = ServerMetrics(SimpleNamespace(engine=on_gpu)).exposition().decode()
    assert "flashsight_gpu_allocator_retries_total 3.0" in exposed
    exposed = ServerMetrics(SimpleNamespace(engine=off_gpu)).exposition().decode()
    assert "\nflashsight_gpu_allocator_retries_total " not in exposed  # a sample line, not its HELP
