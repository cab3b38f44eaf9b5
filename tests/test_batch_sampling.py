"""Sampling a whole step at once picks what each request's own sampler would pick."""

from __future__ import annotations

import torch

from flashsight.engine.batch_sampling import sample_batch
from flashsight.engine.sampling import TokenSampler
from flashsight.engine.types import SamplingParams

VOCAB = 300


def _sampler(params: SamplingParams, prompt=(1, 2, 3), outputs=(), end_ids=frozenset({0})) -> TokenSampler:
    sampler = TokenSampler(params, list(prompt), set(end_ids), torch.device("cpu"))
    sampler.output_ids = list(outputs)
    return sampler


def _copy(sampler: TokenSampler) -> TokenSampler:
    return _sampler(sampler.params, sampler.prompt_ids.tolist(), sampler.output_ids, sampler.end_ids)


def test_greedy_rows_with_every_penalty_match_their_own_sampler():
    torch.manual_seed(0)
    params = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.0, repetition_penalty=1.3),
        SamplingParams(temperature=0.0, presence_penalty=0.7, frequency_penalty=0.4),
        SamplingParams(temperature=0.0, repetition_penalty=0.8, frequency_penalty=1.5, min_tokens=5),
    ]
    for trial in range(20):
        logits = torch.randn(len(params), VOCAB) * 3
        batch = [_sampler(p, prompt=torch.randint(0, VOCAB, (30,)).tolist(),
                          outputs=torch.randint(0, VOCAB, (trial % 7,)).tolist()) for p in params]  # fmt: skip
        alone = [_copy(s).sample(row) for s, row in zip(batch, logits)]
        assert sample_batch(batch, logits.clone()).tolist() == alone


def test_a_token_still_on_the_device_counts_as_history():
    """The engine samples step N+1 before step N's tokens are read back: each row's newest token
    comes from the previous step's token tensor, and penalises exactly as if recorded."""
    torch.manual_seed(2)
    params = [
        SamplingParams(temperature=0.0, repetition_penalty=1.5),
        SamplingParams(temperature=0.0, presence_penalty=2.0, frequency_penalty=1.0),
        SamplingParams(temperature=0.0, min_tokens=3),
        SamplingParams(temperature=0.0),
    ]
    for trial in range(20):
        logits = torch.randn(len(params), VOCAB) * 3
        logits[:, 0] += 4.0  # the end token is often the best: min_tokens must count the pending one
        history = [torch.randint(0, VOCAB, (1 + trial % 3,)).tolist() for _ in params]
        recorded = [_sampler(p, outputs=h) for p, h in zip(params, history)]
        in_flight = [_sampler(p, outputs=h[:-1]) for p, h in zip(params, history)]
        previous = torch.tensor([h[-1] for h in reversed(history)] + [7])  # rows in another order
        pending = [len(params) - 1 - i for i in range(len(params))]
        expected = sample_batch(recorded, logits.clone()).tolist()
        assert sample_batch(in_flight, logits.clone(), pending, previous).tolist() == expected


def test_sampling_leaves_the_step_logits_unchanged():
    logits = torch.randn(3, VOCAB)
    before = logits.clone()
    batch = [_sampler(SamplingParams(temperature=0.0, repetition_penalty=1.3, min_tokens=2)) for _ in range(3)]
    sample_batch(batch, logits)
    assert torch.equal(logits, before)


def test_drawn_rows_respect_top_k_top_p_and_min_tokens():
    torch.manual_seed(1)
    logits = torch.randn(VOCAB)
    logits[0] = 50.0  # the end token would always win...
    order = logits.argsort(descending=True)
    rows = [
        SamplingParams(temperature=0.8, top_k=2, min_tokens=3),  # ...but min_tokens masks it
        SamplingParams(temperature=1.0, top_p=1e-6),  # only the best token survives top-p
        SamplingParams(temperature=1.0, top_k=3, top_p=0.999),
        SamplingParams(temperature=1.0, min_tokens=1),  # no cut: the whole vocabulary but the end token
    ]
    seen: list[set[int]] = [set() for _ in rows]
    for _ in range(200):
        batch = [_sampler(p) for p in rows]
        for i, token in enumerate(sample_batch(batch, logits.expand(len(rows), -1).clone()).tolist()):
            seen[i].add(token)
    assert seen[0] <= set(order[1:3].tolist()) and len(seen[0]) == 2
    assert seen[1] == {int(order[0])}
    assert seen[2] <= set(order[:3].tolist())
    assert len(seen[3]) > 3


def test_rows_with_a_seed_keep_their_own_reproducible_stream():
    logits = torch.randn(2, VOCAB)
    params = SamplingParams(temperature=1.0, seed=1234)
    first = sample_batch([_sampler(params), _sampler(SamplingParams(temperature=1.0))], logits.clone()).tolist()[0]
    again = _sampler(params).sample(logits[0].clone())
    assert first == again
