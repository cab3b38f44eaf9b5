"""Many clients at once: batched answers equal answers given alone; past the queue, a quick 503."""

from __future__ import annotations

import asyncio
import base64
import time

import httpx
import pytest
from openai import AsyncOpenAI
from server_process import flashsight_server, png_bytes

CONCURRENT = 100
DISTINCT = 20  # request i is request i % DISTINCT: ten prompts, each with and without an image
PROMPTS = [f"Question {i}: what do you see?" for i in range(10)]
IMAGE = "data:image/png;base64," + base64.b64encode(png_bytes((120, 90), (10, 200, 90))).decode()


def messages(i: int) -> list[dict]:
    text = {"type": "text", "text": PROMPTS[i % len(PROMPTS)]}
    if i % DISTINCT >= len(PROMPTS):
        return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}, text]}]
    return [{"role": "user", "content": [text]}]


async def streamed_text(client: AsyncOpenAI, model: str, i: int) -> str:
    stream = await client.chat.completions.create(
        model=model, messages=messages(i), stream=True, temperature=0, max_tokens=8 + i % 5,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    return "".join(parts)


def test_hundred_concurrent_streams_match_their_answers_alone(live_server):
    async def scenario():
        async with AsyncOpenAI(base_url=f"{live_server}/v1", api_key="unused", max_retries=0, timeout=300) as client:
            model = (await client.models.list()).data[0].id
            alone = [await streamed_text(client, model, i) for i in range(DISTINCT)]
            together = await asyncio.gather(*(streamed_text(client, model, i) for i in range(CONCURRENT)))
            return alone, together

    alone, together = asyncio.run(scenario())
    mismatched = [i for i, text in enumerate(together) if text != alone[i % DISTINCT]]
    assert not mismatched
    assert all(together)


@pytest.fixture(scope="module")
def small_queue_server(tiny_model_dir):
    """A server that runs one request and lets one more wait."""
    extra = ("--max-num-seqs", "1", "--max-queue", "1")
    with flashsight_server(tiny_model_dir, [], {}, extra) as base_url:
        yield base_url


def test_requests_past_the_queue_get_503_with_retry_after(small_queue_server):
    long = {"messages": [{"role": "user", "content": "Go on."}], "max_tokens": 3000, "ignore_eos": True, "stream": True}

    async def first_line(http: httpx.AsyncClient) -> None:
        async with http.stream("POST", "/v1/chat/completions", json=long) as response:
            async for _ in response.aiter_lines():
                await asyncio.sleep(3600)  # hold the request open until cancelled

    async def scenario():
        async with httpx.AsyncClient(base_url=small_queue_server, timeout=60) as http:
            held = [asyncio.create_task(first_line(http)) for _ in range(2)]  # one runs, one waits
            for _ in range(400):
                stats = (await http.get("/v1/status")).json()["engine"]
                if stats["running_requests"] == 1 and stats["waiting_requests"] == 1:
                    break
                await asyncio.sleep(0.05)
            refused = await http.post("/v1/chat/completions", json={**long, "stream": False, "max_tokens": 1})
            for task in held:
                task.cancel()
            await asyncio.gather(*held, return_exceptions=True)
            return refused

    refused = asyncio.run(scenario())
    assert refused.status_code == 503
    assert float(refused.headers["Retry-After"]) > 0
    error = refused.json()["error"]
    assert error["type"] and "busy" in error["message"]
    with httpx.Client(base_url=small_queue_server, timeout=60) as http:  # the others gone, it serves again
        for _ in range(400):
            stats = http.get("/v1/status").json()["engine"]
            if stats["running_requests"] == 0 and stats["waiting_requests"] == 0:
                break
            time.sleep(0.05)
        assert stats["gpu_memory"] is None  # the server runs on the CPU here
        ok = http.post("/v1/chat/completions", json={**long, "stream": False, "max_tokens": 2})
    assert ok.status_code == 200
