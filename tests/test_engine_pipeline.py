"""The engine queues step N+1 before reading step N's tokens back: a token still on the device
feeds the next step and counts in its penalties, exactly as if it had been read first."""

from __future__ import annotations

import asyncio

import pytest
import torch

from flashsight.engine.types import ChatRequest, SamplingParams
from test_batching_fidelity import BYTES_PER_BLOCK, make_engine, tokens_of
from test_batching_fidelity import expected as greedy_expected  # noqa: F401 (a fixture)
from test_fidelity import CONVERSATIONS, NEW_TOKENS

PENALTY = 1.3


@pytest.fixture(scope="module")
def expected(tiny_model_dir) -> dict[str, list[int]]:
    """transformers' greedy tokens under a repetition penalty (over prompt and output, as ours)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from flashsight.engine.prompt import split_images

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    out = {}
    for name, messages in CONVERSATIONS.items():
        template_messages, images = split_images(messages)
        prompt = processor.apply_chat_template(template_messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[prompt], images=images or None, return_tensors="pt")
        with torch.no_grad():
            tokens = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, repetition_penalty=PENALTY,
                                    top_k=None, top_p=None, temperature=None)  # fmt: skip
        out[name] = tokens[0, inputs["input_ids"].shape[1] :].tolist()
    return out


async def _tokens(engine, name: str) -> list[int]:
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, repetition_penalty=PENALTY)
    return [t async for event in engine.generate(ChatRequest(name, CONVERSATIONS[name], params)) for t in event.token_ids]


@pytest.mark.parametrize("options", [dict(), dict(kv_cache_gb=24 * BYTES_PER_BLOCK / 2**30, max_num_batched_tokens=64)],
                         ids=["batched", "preempted"])  # fmt: skip
def test_penalised_greedy_tokens_match_transformers_alone_and_batched(tiny_model_dir, expected, options):
    engine = make_engine(tiny_model_dir, **options)
    try:
        alone = {name: asyncio.run(_tokens(engine, name)) for name in CONVERSATIONS}

        async def together():
            return await asyncio.gather(*(_tokens(engine, name) for name in CONVERSATIONS))

        for _ in range(3):  # the budget preempts once requests overlap, and overlap is timing
            assert dict(zip(CONVERSATIONS, asyncio.run(together()))) == expected
            if not options or engine.scheduler.preemptions:
                break
        else:
            pytest.fail("three rounds of concurrent requests never preempted one")
    finally:
        asyncio.run(engine.shutdown())
    assert alone == expected


def test_a_cached_prompts_tail_runs_as_decode_rows_and_matches_transformers(tiny_model_dir, greedy_expected):
    """Sent again, a conversation finds its prefix cached; the few tokens after the last full
    block run through the decode step as one row each (the CUDA graph on a GPU), not the
    prefill path, and the answer is still transformers' token for token."""
    engine = make_engine(tiny_model_dir)
    chunks = []
    execute = engine.runner.decoder.execute

    def recording(batch, previous=None):
        chunks.extend(count for _, count in batch)
        return execute(batch, previous)

    engine.runner.decoder.execute = recording
    try:
        for name in CONVERSATIONS:
            assert asyncio.run(tokens_of(engine, name)) == greedy_expected[name]
            del chunks[:]
            assert asyncio.run(tokens_of(engine, name)) == greedy_expected[name]  # the prefix is cached now
            if not _tail_shows_an_image(engine, name):  # image rows need the prefill path
                assert max(chunks) > 1, name
    finally:
        asyncio.run(engine.shutdown())


def _tail_shows_an_image(engine, name: str) -> bool:
    prompt, _ = engine.prepare(ChatRequest(name, CONVERSATIONS[name], SamplingParams()))
    block = engine.blocks.block_size
    cached = (len(prompt.token_ids) - 1) // block * block  # the last token is always computed
    return any(end > cached for _, end in prompt.image_spans)
