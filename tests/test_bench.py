"""`flashsight bench`: the real command against the live tiny server, plus its parts on
hand-written input (percentiles, SSE chunks) and its image generator."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time

import aiohttp
import httpx
import pytest
from PIL import Image
from server_process import REPO_ROOT, free_port

from flashsight.bench.client import RequestResult, StreamError, StreamTally, send
from flashsight.bench.environment import environment, is_local
from flashsight.bench.images import photo_jpeg
from flashsight.bench.stats import percentile, summarise
from flashsight.bench.workloads import WORKLOADS, PreparedRequest, RequestFactory, RequestOptions

TABLE_HEADER = ("conc", "requests", "errors", "TTFT p50", "TTFT p95", "e2e p50", "e2e p95", "req/s", "out tok/s")


def bench(*args: str) -> subprocess.CompletedProcess:
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "flashsight.cli", "bench", *args]
    env = {**os.environ, "PYTHONPATH": python_path}
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def engine_stats(live_server: str) -> dict:
    return httpx.get(f"{live_server}/v1/status", timeout=30).json()["engine"]


def image_cache_counts(live_server: str) -> tuple[int, int]:
    """(misses, hits) once the engine's process has reported its last steps (its statistics
    arrive with its heartbeat): read until two readings a heartbeat apart agree."""
    def read() -> tuple[int, int]:
        stats = engine_stats(live_server)
        return stats["image_cache_misses"], stats["image_cache_hits"]

    counts = read()
    for _ in range(20):
        time.sleep(1.0)
        again = read()
        if again == counts:
            break
        counts = again
    return counts


# ---- the live server --------------------------------------------------------------------------


def test_w2_run_prints_a_table_and_writes_consistent_json(live_server, tmp_path):
    misses, hits = image_cache_counts(live_server)
    out = tmp_path / "w2.json"
    result = bench("--base-url", f"{live_server}/v1", "--workload", "W2", "--concurrency", "1", "2",
                   "--requests", "3", "--output-tokens", "5", "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in TABLE_HEADER)
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [row[:3] for row in rows] == [["1", "3", "0"], ["2", "3", "0"]]  # concurrency, requests, errors

    report = json.loads(out.read_text())
    assert report["settings"]["workload"]["name"] == "W2"
    assert report["settings"]["concurrency"] == [1, 2]
    assert report["settings"]["api_key_given"] is False
    assert report["environment"]["base_url"] == f"{live_server}/v1"
    assert report["environment"]["model"] == report["settings"]["model"]
    assert report["environment"]["server_is_local"] is True
    assert report["warmup"]["ok"] is True
    assert [level["concurrency"] for level in report["levels"]] == [1, 2]
    for level in report["levels"]:
        check_level(level, requests=3, output_tokens=5)

    # Every request, the warm-up included, carried an image the server had never seen.
    assert image_cache_counts(live_server) == (misses + 7, hits)


def check_level(level: dict, requests: int, output_tokens: int) -> None:
    assert (level["requests"], level["completed"], level["errors"], level["first_error"]) == (requests, requests, 0, None)
    assert 0 < level["ttft_s_p50"] <= level["ttft_s_p95"]
    assert 0 < level["e2e_s_p50"] <= level["e2e_s_p95"]
    assert level["mean_output_tokens"] == output_tokens  # the server honours ignore_eos / min_tokens
    assert level["usage_reported"] is True
    assert level["requests_per_s"] == pytest.approx(requests / level["duration_s"])
    assert level["output_tokens_per_s"] == pytest.approx(requests * output_tokens / level["duration_s"])
    assert level["decode_tok_s_per_stream_p50"] > 0
    assert 45_000 < level["mean_jpeg_bytes"] < 100_000
    per_request = level["per_request"]
    assert len(per_request) == requests and len({r["index"] for r in per_request}) == requests
    for record in per_request:
        assert record["ok"] and record["output_tokens"] == output_tokens
        assert 0 < record["ttft_s"] <= record["e2e_s"]
        decode_s = record["e2e_s"] - record["ttft_s"]
        assert record["decode_tok_s"] == pytest.approx((output_tokens - 1) / decode_s)


def test_w1_repeat_sends_one_image_the_server_has_seen(live_server, tmp_path):
    misses, _ = image_cache_counts(live_server)
    out = tmp_path / "repeat.json"
    result = bench("--base-url", f"{live_server}/v1", "--workload", "W1-repeat", "--requests", "3",
                   "--output-tokens", "3", "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [level["concurrency"] for level in report["levels"]] == [1]  # W1-repeat's default
    check_w1_level(report["levels"][0])
    assert image_cache_counts(live_server)[0] == misses + 1  # the warm-up's


def check_w1_level(level: dict) -> None:
    assert (level["requests"], level["errors"], level["mean_output_tokens"]) == (3, 0, 3)
    assert 150_000 < level["mean_jpeg_bytes"] < 300_000


def test_unknown_model_counts_every_request_as_failed(live_server, tmp_path):
    out = tmp_path / "errors.json"
    result = bench("--base-url", f"{live_server}/v1", "--model", "no-such-model", "--workload", "W2",
                   "--concurrency", "2", "--requests", "3", "--output-tokens", "2", "--json", str(out))  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "4 of 4 requests failed" in result.stderr and "no-such-model" in result.stderr
    report = json.loads(out.read_text())
    assert report["warmup"]["ok"] is False
    (level,) = report["levels"]
    assert (level["requests"], level["completed"], level["errors"]) == (3, 0, 3)
    assert level["first_error"].startswith("HTTP 404: ") and "no-such-model" in level["first_error"]
    assert level["ttft_s_p50"] is None and level["requests_per_s"] == 0
    assert "3 failed; first error: HTTP 404" in result.stdout


def test_base_url_with_no_server_is_one_clear_line():
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = bench("--base-url", url, "--workload", "W2", "--requests", "1")
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and "Traceback" not in result.stderr
    assert error_lines[0].startswith("flashsight: error: could not reach ") and url in error_lines[0]


def test_base_url_without_the_api_root_says_so(live_server):
    result = bench("--base-url", live_server, "--workload", "W2", "--requests", "1")
    assert result.returncode == 2
    assert "HTTP 404" in result.stderr and "/v1" in result.stderr


def test_bench_help_says_what_ttft_counts():
    result = bench("--help")
    assert result.returncode == 0
    assert "first generated token" in result.stdout and "reasoning_content" in result.stdout
    for flag in ("--base-url", "--api-key", "--model", "--workload", "--concurrency", "--requests", "--json", "--thinking"):
        assert flag in result.stdout


# ---- images and request bodies ----------------------------------------------------------------


@pytest.mark.parametrize(("workload", "low", "high"), [("W1", 180_000, 270_000), ("W2", 55_000, 90_000)])
def test_images_are_photo_sized_jpegs_of_the_workloads_shape(workload, low, high):
    spec = WORKLOADS[workload]
    jpegs = [photo_jpeg(spec.width, spec.height, seed=11, index=i) for i in range(4)]
    assert low < sum(map(len, jpegs)) / len(jpegs) < high
    for jpeg in jpegs:
        image = Image.open(io.BytesIO(jpeg))
        assert (image.format, image.size) == ("JPEG", (spec.width, spec.height))


def test_images_are_fresh_per_index_and_seed_and_reproducible():
    assert photo_jpeg(64, 48, seed=1, index=3) == photo_jpeg(64, 48, seed=1, index=3)
    images = {photo_jpeg(64, 48, seed=seed, index=index) for seed in (1, 2) for index in range(5)}
    assert len(images) == 10


def image_urls(prepared: list[PreparedRequest]) -> list[str]:
    return [json.loads(p.body)["messages"][0]["content"][0]["image_url"]["url"] for p in prepared]


def test_every_request_but_w1_repeat_carries_a_new_image():
    options = RequestOptions(model="m")
    fresh = RequestFactory(WORKLOADS["W2"], options, seed=5).prepare(range(0, 4))
    assert len(set(image_urls(fresh))) == 4
    repeat = RequestFactory(WORKLOADS["W1-repeat"], options, seed=5).prepare(range(0, 3))
    assert len(set(image_urls(repeat))) == 1
    assert all(url.startswith("data:image/jpeg;base64,") for url in image_urls(fresh + repeat))


def test_request_body_asks_for_an_exact_streamed_length_without_thinking():
    body = json.loads(RequestFactory(WORKLOADS["W1"], RequestOptions(model="m"), seed=0).prepare_one(1).body)
    assert body["model"] == "m" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == body["min_tokens"] == 128 and body["ignore_eos"] is True
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["messages"][0]["content"][1] == {"type": "text", "text": "Describe this image in detail."}
    omitted = RequestFactory(WORKLOADS["W2"], RequestOptions(model="m", thinking="omit"), seed=0).body("data:,")
    assert "chat_template_kwargs" not in omitted and omitted["max_tokens"] == 32


# ---- percentiles and stream chunks on hand-written input ---------------------------------------


def test_percentile_interpolates_between_closest_ranks():
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0 and percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_counts_failures_and_leaves_them_out_of_the_timings():
    results = [
        RequestResult(0, True, ttft_s=0.1, e2e_s=1.1, output_tokens=11, usage_reported=True),
        RequestResult(1, False, error="HTTP 500: boom"),
        RequestResult(2, True, ttft_s=0.3, e2e_s=2.3, output_tokens=11, usage_reported=True),
    ]
    level = summarise(2, results, duration_s=4.0, mean_jpeg_bytes=1000.0)
    assert (level.requests, level.completed, level.errors, level.first_error) == (3, 2, 1, "HTTP 500: boom")
    assert level.ttft_s_p50 == pytest.approx(0.2) and level.e2e_s_p95 == pytest.approx(2.24)  # 1.1 + 0.95 x 1.2
    assert level.requests_per_s == 0.5 and level.output_tokens_per_s == 5.5
    assert level.decode_tok_s_per_stream_p50 == pytest.approx(7.5)  # (10 / 1.0 + 10 / 2.0) / 2


def test_first_token_is_the_first_text_of_answer_or_thinking():
    tally = StreamTally()
    tally.read(json.dumps({"choices": [{"delta": {"role": "assistant", "content": ""}}]}), now=1.0)
    assert tally.first_token_at is None
    tally.read(json.dumps({"choices": [{"delta": {"reasoning_content": "Hm"}}]}), now=2.0)
    tally.read(json.dumps({"choices": [{"delta": {"content": "A cat"}}]}), now=3.0)
    tally.read(json.dumps({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 7}}), now=4.0)
    tally.read("[DONE]", now=5.0)
    assert (tally.first_token_at, tally.text_chunks, tally.usage_tokens, tally.done) == (2.0, 2, 7, True)
    with pytest.raises(StreamError, match="engine failed"):
        StreamTally().read(json.dumps({"error": {"message": "engine failed", "type": "server_error"}}), now=1.0)


def send_to(status: int, body: bytes, content_type: str = "text/event-stream") -> RequestResult:
    """One `send` to a loopback server that answers with exactly these bytes: hand-written server
    input, over a real socket."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(f"HTTP/1.1 {status} Answer\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
                     "connection: close\r\n\r\n".encode() + body)  # fmt: skip
        await writer.drain()
        writer.close()

    async def go() -> RequestResult:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
        async with server, aiohttp.ClientSession() as session:
            return await send(session, url, PreparedRequest(0, b"{}", 0))

    return asyncio.run(go())


def test_sse_stream_with_crlf_pings_odd_chunks_and_no_usage_counts_chunks():
    body = (b": keep-alive\r\n\r\nevent: ping\r\ndata:\r\n\r\n"
            b"data: {\"choices\": [{\"delta\": {\"content\": \"a\"}}]}\r\n\r\n"
            b"data: {\"choices\": {\"odd\": true}, \"error\": null}\r\n\r\n"
            b"data: {\"choices\": [{\"delta\": {\"content\": \"b\"}}]}\r\n\r\ndata: [DONE]\r\n\r\n")  # fmt: skip
    result = send_to(200, body)
    assert result.ok and result.output_tokens == 2 and result.usage_reported is False
    assert 0 < result.ttft_s <= result.e2e_s


def test_http_error_and_cut_stream_become_clear_messages():
    error = json.dumps({"error": {"message": "bad image", "type": "invalid_request_error"}}).encode()
    assert send_to(400, error, "application/json").error == "HTTP 400: bad image"
    cut = send_to(200, b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n')
    assert not cut.ok and cut.error == "the stream ended without [DONE]"
    not_sse = send_to(200, b'{"choices": []}', "application/json")
    assert not not_sse.ok and "text/event-stream" in not_sse.error


def test_events_are_read_across_chunk_boundaries_as_the_sse_spec_says():
    """Lines end in CRLF, LF or CR, even when a read splits a CRLF or a UTF-8 character; data
    lines join with LF; comments, other fields and events without data are not events."""
    from flashsight.bench.sse import EventData

    stream = ': hi\r\nevent: ping\r\n\r\ndata: one\r\ndata:two\r\n\r\ndata: caf\u00e9\rid: 7\r\rdata: x\n\n'.encode()
    for cut in range(1, len(stream)):
        events = EventData()
        assert events.feed(stream[:cut]) + events.feed(stream[cut:]) == ["one\ntwo", "caf\u00e9", "x"], cut
    events = EventData()
    assert [data for byte in stream for data in events.feed(bytes([byte]))] == ["one\ntwo", "caf\u00e9", "x"]
    assert EventData().feed(b"data: unfinished\n") == []  # no blank line yet: not an event


def test_gpus_are_read_only_for_a_server_on_this_machine():
    assert is_local("http://127.0.0.1:8000/v1") and is_local("http://localhost:8000/v1")
    assert is_local("http://[::1]:8000/v1")
    assert not is_local("http://gpu-box.example:8000/v1")
    remote = environment("http://gpu-box.example:8000/v1", "m")
    assert (remote["server_is_local"], remote["gpus"], remote["model"]) == (False, None, "m")


def test_unwritable_json_path_is_refused_before_the_run(tmp_path):
    result = bench("--base-url", "http://127.0.0.1:1/v1", "--workload", "W2", "--json", str(tmp_path / "no" / "x.json"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"flashsight: error: --json {tmp_path / 'no' / 'x.json'}: its folder does not exist"
