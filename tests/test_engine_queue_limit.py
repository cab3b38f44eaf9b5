"""The engine's queue limit counts requests waiting for a seat in the batch, prompts not yet built
included, beyond the seats free now: a burst on an idle engine fills its seats first."""

from __future__ import annotations

import asyncio

import pytest

from flashsight.engine.config import EngineConfig
from flashsight.engine.engine import Engine
from flashsight.engine.errors import EngineOverloadedError
from flashsight.engine.types import ChatRequest, SamplingParams


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = Engine(EngineConfig(model=tiny_model_dir, device="cpu", max_num_seqs=2, max_queue=1))
    yield engine
    asyncio.run(engine.shutdown())


def test_a_burst_fills_the_free_seats_and_the_queue_then_is_refused(engine):
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)

    async def one(index: int) -> int | str:
        request = ChatRequest(f"burst-{index}", [{"role": "user", "content": f"Count to {index}."}], params)
        try:
            return len([event async for event in engine.generate(request)])
        except EngineOverloadedError:
            return "refused"

    async def burst():
        # All four are handed over in one turn of the event loop, before the engine has built
        # any of their prompts: two seats, one place in the queue, then the limit.
        return await asyncio.gather(*(one(i) for i in range(4)))

    assert asyncio.run(asyncio.wait_for(burst(), timeout=60)) == [40, 40, 40, "refused"]
    assert engine.snapshot()["waiting_requests"] == 0
