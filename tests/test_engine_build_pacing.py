"""A burst of requests while the GPU has nothing to run: the engine builds only the prompts that
fill one step's token budget, queues that step, and builds the rest while it runs, instead of
building every prompt first with the GPU idle. Off a GPU a step has run by the time it is queued,
so every turn builds one budget's worth at most (the prompt that crosses the budget included)."""

from __future__ import annotations

import asyncio

from test_batching_fidelity import expected, make_engine, tokens_of  # noqa: F401 (a fixture)
from test_fidelity import CONVERSATIONS

COPIES = 3  # each conversation this many times at once: a burst several budgets long


def test_a_burst_is_built_one_step_at_a_time_and_answers_stay_transformers(tiny_model_dir, expected):
    probe = make_engine(tiny_model_dir)
    lengths = {name: len(probe.prepare(request_for(name))[0].token_ids) for name in CONVERSATIONS}
    asyncio.run(probe.shutdown())
    budget = max(lengths.values())  # a step holds about one prompt: the burst is many steps long
    engine = make_engine(tiny_model_dir, max_num_batched_tokens=budget, enable_prefix_caching=False)
    order: list[tuple[str, int]] = []  # ("build", prompt tokens) and ("step", 0), as they happen
    build_prompt, execute = engine.build_prompt, engine.runner.execute

    def recording_build(request):
        prompt = build_prompt(request)
        order.append(("build", len(prompt.token_ids)))
        return prompt

    def recording_execute(batch, previous=None):
        order.append(("step", 0))
        return execute(batch, previous)

    engine.build_prompt, engine.runner.execute = recording_build, recording_execute

    async def burst():
        names = [name for name in CONVERSATIONS for _ in range(COPIES)]
        return names, await asyncio.gather(*(tokens_of(engine, name) for name in names))

    try:
        names, answers = asyncio.run(burst())
    finally:
        asyncio.run(engine.shutdown())
    for name, tokens in zip(names, answers):
        assert tokens == expected[name], name
    built_between_steps, run = [], []
    for kind, tokens in order:
        if kind == "step":
            if run:
                built_between_steps.append(run)
            run = []
        else:
            run.append(tokens)
    assert sum(len(r) for r in built_between_steps) + len(run) == len(names)
    # A turn stops building once what it built covers the budget: all but its last prompt fit under it.
    assert all(sum(r[:-1]) < budget for r in built_between_steps + [run] if r), built_between_steps
    assert len(built_between_steps) >= 2  # the burst was built over several steps, not before the first


def request_for(name: str):
    from flashsight.engine.types import ChatRequest, SamplingParams

    return ChatRequest(name, CONVERSATIONS[name], SamplingParams(max_tokens=1))
