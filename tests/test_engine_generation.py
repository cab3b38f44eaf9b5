"""The engine's sampling controls, stop conditions and cancellation, on the tiny checkpoint."""

from __future__ import annotations

import asyncio

import pytest

from flashsight.engine.config import EngineConfig
from flashsight.engine.engine import Engine
from flashsight.engine.errors import InvalidRequestError
from flashsight.engine.types import ChatRequest, SamplingParams
from sample_images import noise_image

MESSAGES = [{"role": "user", "content": "Tell me a story about a lighthouse."}]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = Engine(EngineConfig(model=tiny_model_dir, device="cpu", max_model_len=512))
    yield engine
    asyncio.run(engine.shutdown())


def run(engine, params: SamplingParams, messages=MESSAGES):
    async def collect():
        events = []
        async for event in engine.generate(ChatRequest("t", messages, params)):
            events.append(event)
        return events

    return asyncio.run(collect())


def tokens(events) -> list[int]:
    return [t for e in events for t in e.token_ids]


def test_max_tokens_and_length_finish(engine):
    events = run(engine, SamplingParams(max_tokens=7, temperature=0.0, ignore_eos=True))
    assert len(tokens(events)) == 7
    assert events[-1].finish_reason == "length" and events[-1].completion_tokens == 7
    assert all(e.finish_reason is None for e in events[:-1])


def test_same_seed_same_output_different_seed_differs(engine):
    params = dict(max_tokens=16, temperature=1.5, top_p=1.0, ignore_eos=True)
    first = tokens(run(engine, SamplingParams(seed=11, **params)))
    again = tokens(run(engine, SamplingParams(seed=11, **params)))
    other = tokens(run(engine, SamplingParams(seed=12, **params)))
    assert first == again
    assert first != other


def test_top_k_one_is_greedy(engine):
    greedy = tokens(run(engine, SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)))
    top1 = tokens(run(engine, SamplingParams(max_tokens=10, temperature=1.0, top_k=1, seed=3, ignore_eos=True)))
    assert top1 == greedy


def test_repetition_and_frequency_penalties_change_repetitive_output(engine):
    plain = tokens(run(engine, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)))
    assert len(set(plain)) < len(plain)  # the random tiny model repeats itself
    for penalty in (dict(repetition_penalty=5.0), dict(frequency_penalty=2.0), dict(presence_penalty=2.0)):
        penalized = tokens(run(engine, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, **penalty)))
        assert len(set(penalized)) > len(set(plain)), penalty


def test_stop_token_ids_and_min_tokens(engine):
    greedy = tokens(run(engine, SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)))
    stopped = run(engine, SamplingParams(max_tokens=10, temperature=0.0, stop_token_ids=(greedy[0],)))
    assert tokens(stopped) == greedy[:1] and stopped[-1].finish_reason == "stop"
    held = run(engine, SamplingParams(max_tokens=10, temperature=0.0, stop_token_ids=(greedy[0],), min_tokens=3))
    assert len(tokens(held)) >= 3 and greedy[0] not in tokens(held)[:3]


def test_stop_string_finishes_with_stop(engine):
    full = "".join(e.text for e in run(engine, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)))
    stop = full[3:5]
    events = run(engine, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, stop=(stop,)))
    text = "".join(e.text for e in events)
    assert events[-1].finish_reason == "stop"
    assert text == full[: full.index(stop)] and stop not in text


def test_prompt_longer_than_context_is_refused(engine):
    long = [{"role": "user", "content": "word " * 600}]
    with pytest.raises(InvalidRequestError, match="context"):
        run(engine, SamplingParams(max_tokens=4), long)


def test_extreme_aspect_ratio_image_is_a_request_error(engine):
    messages = [{"role": "user", "content": [{"type": "image", "image": noise_image(28 * 220, 28, 1)}]}]
    with pytest.raises(InvalidRequestError, match="image"):
        run(engine, SamplingParams(max_tokens=4), messages)


def test_a_refused_prompt_beside_running_requests_leaves_them_be(engine):
    """Prompts are built on the engine's thread, between the steps it queues: one that cannot fit
    is refused to its own requester while the request already running, and one sent with it,
    go on to their end."""
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)

    async def collect(messages):
        return [event async for event in engine.generate(ChatRequest("r", messages, params))]

    async def scenario():
        running = asyncio.create_task(collect(MESSAGES))
        while engine.stats.generated_tokens == before:  # the first request is in its steps
            await asyncio.sleep(0.001)
        return await asyncio.gather(running, collect([{"role": "user", "content": "word " * 600}]), collect(MESSAGES),
                                    return_exceptions=True)  # fmt: skip

    before = engine.stats.generated_tokens
    first, refused, beside = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert isinstance(refused, InvalidRequestError) and "context" in str(refused)
    assert len(tokens(first)) == 12 and tokens(beside) == tokens(first)
    assert engine.snapshot()["waiting_requests"] == 0


def test_closing_the_stream_stops_generation(engine):
    long = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)
    short = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)

    async def scenario():
        stream = engine.generate(ChatRequest("c", MESSAGES, long))
        first = await stream.__anext__()
        await stream.aclose()
        # The single worker takes the next request only once the abandoned one has stopped.
        after = [e async for e in engine.generate(ChatRequest("d", MESSAGES, short))]
        return first, after

    before = (engine.stats.generated_tokens, engine.stats.aborted_requests)
    first, after = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert first.completion_tokens == 1 and after[-1].finish_reason == "length"
    assert engine.stats.aborted_requests == before[1] + 1
    assert engine.stats.generated_tokens - before[0] < 3 + 50  # far fewer than the 400 asked for


def test_generation_defaults_come_from_the_checkpoint(engine):
    assert engine.sampling_defaults() == {"temperature": 0.8, "top_p": 0.6, "top_k": 2, "repetition_penalty": 1.1}
    assert {151329, 151336, 151338} <= engine.ckpt.eos_ids
