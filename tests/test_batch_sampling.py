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
        assert sample_batch(batch, logits.clone()) == alone
        assert all(s.output_ids[-1] == token for s, token in zip(batch, alone))


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
        for i, token in enumerate(sample_batch(batch, logits.expand(len(rows), -1).clone())):
            seen[i].add(token)
    assert seen[0] <= set(order[1:3].tolist()) and len(seen[0]) == 2
    assert seen[1] == {int(order[0])}
    assert seen[2] <= set(order[:3].tolist())
    assert len(seen[3]) > 3


def test_rows_with_a_seed_keep_their_own_reproducible_stream():
    logits = torch.randn(2, VOCAB)
    params = SamplingParams(temperature=1.0, seed=1234)
    first = sample_batch([_sampler(params), _sampler(SamplingParams(temperature=1.0))], logits.clone())[0]
    again = _sampler(params).sample(logits[0].clone())
    assert first == again
