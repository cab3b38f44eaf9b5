"""On a GPU the engine stops building new prompts once the GPU is down to the step just queued
and the scheduler has a next one for it: the other arrivals wait for a later turn instead of
leaving the GPU idle. Deferred so, every request is still served, with transformers' tokens.

A CPU has no step running beside the engine's thread, so here the GPU's side of the condition
is taken as always true: the deferral itself runs as it does on a GPU."""

from __future__ import annotations

import asyncio

from test_batching_fidelity import expected, make_engine, tokens_of  # noqa: F401 (expected: a fixture)
from test_fidelity import CONVERSATIONS


async def wave_behind_one(engine) -> dict[str, list[int]]:
    """The first conversation, then every other one at once while it generates."""
    first, *others = CONVERSATIONS
    leader = asyncio.create_task(tokens_of(engine, first))
    while engine.scheduler.running == []:
        await asyncio.sleep(0.001)
    rest = await asyncio.gather(*(tokens_of(engine, name) for name in others))
    return {first: await leader, **dict(zip(others, rest))}


def test_arrivals_deferred_while_the_gpu_waits_are_served_the_same(tiny_model_dir, expected):
    engine = make_engine(tiny_model_dir)
    engine._gpu_wants_next_step = engine.scheduler.has_work  # the GPU down to one step, always
    left_for_later = []
    build = engine._build_prompts

    def build_and_count():
        build()
        left_for_later.append(len(engine._arrivals))

    engine._build_prompts = build_and_count
    try:
        assert asyncio.run(asyncio.wait_for(wave_behind_one(engine), 120)) == expected
        assert max(left_for_later) > 0, "no arrival was ever left for a later turn"
        assert engine.scheduler.running == [] and engine._arrivals == [] and engine._prepared == []
    finally:
        asyncio.run(engine.shutdown())
