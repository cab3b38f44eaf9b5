"""Memory pressure in the engine: an out-of-memory step fails only the request that caused it,
and a trim (asked when GPU memory runs short) drops the caches before anything fails. On a CPU
the GPU's limit is played by the model runner refusing chunks over a size, as CUDA would."""

from __future__ import annotations

import asyncio

import pytest
import torch

from flashsight.engine.config import EngineConfig
from flashsight.engine.engine import Engine
from flashsight.engine.types import ChatRequest, SamplingParams
from flashsight.ops.worker import memory_is_short
from sample_images import noise_image

MEMORY_LIMIT_TOKENS = 64  # a chunk longer than this "does not fit on the GPU"
GREEDY = SamplingParams(max_tokens=2000, temperature=0.0, ignore_eos=True)


@pytest.fixture
def engine(tiny_model_dir):
    engine = Engine(EngineConfig(model=tiny_model_dir, device="cpu"))
    yield engine
    asyncio.run(engine.shutdown())


def limit_memory(engine: Engine) -> None:
    execute = engine.runner.execute

    def execute_within_memory(batch, previous=None):
        if any(count > MEMORY_LIMIT_TOKENS for _, count in batch):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return execute(batch, previous)

    engine.runner.execute = execute_within_memory


def test_out_of_memory_fails_only_the_request_that_caused_it(engine):
    limit_memory(engine)
    short = [{"role": "user", "content": "Hi."}]
    huge = [{"role": "user", "content": "word " * 300}]

    async def scenario():
        running = engine.generate(ChatRequest("short", short, GREEDY))
        await anext(running)  # generating: its decodes share the next steps with the huge prefill
        failed = [event async for event in engine.generate(ChatRequest("huge", huge, GREEDY))]
        after = [await anext(running) for _ in range(5)]
        await running.aclose()
        return failed, after

    failed, after = asyncio.run(scenario())
    assert failed[-1].finish_reason == "error"
    assert all(event.finish_reason is None and event.token_ids for event in after)
    assert engine.is_ready()


def test_trim_drops_the_image_cache_before_the_next_step(engine):
    photo = noise_image(200, 160, 3)
    with_image = [{"role": "user", "content": [{"type": "image", "image": photo}, {"type": "text", "text": "What?"}]}]
    text_only = [{"role": "user", "content": "And now?"}]
    few = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)

    async def answer(messages):
        return [event async for event in engine.generate(ChatRequest("r", messages, few))]

    asyncio.run(answer(with_image))
    assert engine.images.bytes > 0
    engine.request_trim()
    assert asyncio.run(answer(text_only))[-1].finish_reason == "length"
    assert engine.images.bytes == 0 and not engine.images.entries


def test_memory_is_short_above_the_configured_share():
    total = 80 * 2**30
    assert memory_is_short({"used_bytes": int(0.96 * total), "total_bytes": total}, 0.95)
    assert not memory_is_short({"used_bytes": int(0.90 * total), "total_bytes": total}, 0.95)
    assert not memory_is_short(None, 0.95)  # no GPU
