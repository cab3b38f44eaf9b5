"""On a GPU the engine stops building prompts once the GPU has run everything queued while
sequences wait for a next step: that step is launched first, and the rest built after it. What
was built waits for the rest, so that a wave of arrivals joins the scheduler together (one mixed
step) instead of spread over several. Paced so, every request is still served, with
transformers' tokens.

A CPU has no step running beside the engine's thread, so here the GPU's side of the condition is
taken as true whenever sequences are running: the pacing itself runs as it does on a GPU."""

from __future__ import annotations

import asyncio

import pytest
from test_batching_fidelity import expected, make_engine, tokens_of  # noqa: F401 (expected: a fixture)
from test_fidelity import CONVERSATIONS

import flashsight.engine.engine as engine_module


async def wave_behind_one(engine) -> dict[str, list[int]]:
    """The first conversation, then every other one at once while it generates."""
    first, *others = CONVERSATIONS
    leader = asyncio.create_task(tokens_of(engine, first))
    while engine.scheduler.running == []:
        await asyncio.sleep(0.001)
    rest = await asyncio.gather(*(tokens_of(engine, name) for name in others))
    return {first: await leader, **dict(zip(others, rest))}


def test_a_wave_built_over_several_turns_joins_at_once_and_is_served_the_same(tiny_model_dir, expected, monkeypatch):
    monkeypatch.setattr(engine_module, "_HOLD_LIMIT_S", 60.0)  # the slowest CI machine stays inside it
    engine = make_engine(tiny_model_dir)
    engine._gpu_waits_for_a_step = lambda: bool(engine.scheduler.running)
    built_in: dict[int, int] = {}  # id(seq) -> which build made it
    builds = [0]
    joined: list[list[int]] = []  # for each admission, the builds that made the prompts it let in
    build, admit = engine._build_prompts, engine._admit

    def build_and_note():
        build()
        builds[0] += 1
        for job in engine._prepared:
            built_in.setdefault(id(job.seq), builds[0])

    def admit_and_note(block):
        before = set(engine._jobs)
        running = admit(block)
        new = set(engine._jobs) - before
        if new:
            joined.append(sorted(built_in[key] for key in new))
        return running

    engine._build_prompts, engine._admit = build_and_note, admit_and_note
    try:
        assert asyncio.run(asyncio.wait_for(wave_behind_one(engine), 120)) == expected
        assert any(len(set(made)) > 1 for made in joined), f"no admission let in prompts of several builds: {joined}"
        assert engine.scheduler.running == [] and engine._arrivals == [] and engine._prepared == []
    finally:
        asyncio.run(engine.shutdown())
