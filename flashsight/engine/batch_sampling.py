"""Choosing the next token for a whole step at once, without waiting for the GPU.

`TokenSampler.sample` does it for one sequence, with a handful of small GPU ops and a device sync
each; at a hundred sequences that costs more than the model's step. Here the rows that need no
per-request state beyond their token history (no grammar, no seeded generator) are penalised,
filtered and drawn together, and the result stays on the device: the engine reads it back while
the GPU runs the next step. The arithmetic is the per-row sampler's, element for element, so
greedy choices are identical; rows with a grammar or a seed still go through their own sampler.

A row's newest output token may itself still be on the GPU (sampled by the step before, not yet
read back): `pending` gives its row in `previous`, and the penalties count it from there.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from flashsight.engine.host_copy import to_device
from flashsight.engine.sampling import TokenSampler

_CANDIDATES = 1024  # top-k up to this many: top-p sorts only the candidates, not the vocabulary


def sample_batch(
    samplers: list[TokenSampler], logits: torch.Tensor, pending: list[int | None] | None = None,
    previous: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """logits: [len(samplers), vocab] float32. Returns one token per row, [len(samplers)] int64
    on the logits' device; nothing is recorded (the caller does, with `TokenSampler.record`, once
    the tokens are on the CPU). Rows with their own sampler must have nothing pending."""
    device = logits.device
    pending = pending or [None] * len(samplers)
    shared = [i for i, s in enumerate(samplers) if s.guide is None and s.generator is None]
    if len(shared) == len(samplers):
        return _choose(samplers, logits, pending, previous, in_place=False)
    alone = [0] * len(samplers)
    for i in set(range(len(samplers))) - set(shared):
        assert pending[i] is None, "a row with its own sampler needs its history on the CPU"
        alone[i] = samplers[i].sample(logits[i])
    tokens = to_device(alone, torch.long, device)
    if shared:
        rows = to_device(shared, torch.long, device)
        chosen = _choose([samplers[i] for i in shared], logits.index_select(0, rows),
                         [pending[i] for i in shared], previous, in_place=True)  # fmt: skip
        tokens.index_copy_(0, rows, chosen)
    return tokens


def _choose(rows: list[TokenSampler], logits: torch.Tensor, pending: list[int | None], previous, in_place: bool):
    device = logits.device
    penalized = [r for r, s in enumerate(rows) if _penalized(s, pending[r])]
    masked = [(r, end) for r, s in enumerate(rows) if _outputs(s, pending[r]) < s.params.min_tokens
              for end in sorted(s.end_ids)]  # fmt: skip
    if (penalized or masked) and not in_place:
        logits = logits.clone()  # the step's logits buffer is the model's; change a copy
    if penalized:
        _penalize(rows, logits, pending, previous)
    if masked:
        where = to_device(masked, torch.long, device)
        # The value on the device: `logits[...] = float("-inf")` would make it a CPU tensor, and
        # copying that to the GPU waits for every queued kernel, once per step until min_tokens.
        logits.index_put_((where[:, 0], where[:, 1]), torch.full((), float("-inf"), device=device))
    greedy = [r for r, s in enumerate(rows) if s.params.temperature <= 0]
    if len(greedy) == len(rows):
        return logits.argmax(dim=-1)
    if not greedy:
        return _draw(rows, logits)
    drawn = [r for r, s in enumerate(rows) if s.params.temperature > 0]
    greedy_rows, drawn_rows = to_device(greedy, torch.long, device), to_device(drawn, torch.long, device)
    out = torch.empty(len(rows), dtype=torch.long, device=device)
    out[greedy_rows] = logits.index_select(0, greedy_rows).argmax(dim=-1)
    out[drawn_rows] = _draw([rows[r] for r in drawn], logits.index_select(0, drawn_rows))
    return out


def _outputs(sampler: TokenSampler, pending: int | None) -> int:
    return len(sampler.output_ids) + (pending is not None)


def _penalized(sampler: TokenSampler, pending: int | None) -> bool:
    p = sampler.params
    return p.repetition_penalty != 1.0 or (_outputs(sampler, pending) > 0 and bool(p.presence_penalty or p.frequency_penalty))


def _penalize(rows: list[TokenSampler], logits: torch.Tensor, pending: list[int | None], previous) -> None:
    device = logits.device
    repeated = [r for r, s in enumerate(rows) if s.params.repetition_penalty != 1.0]
    if repeated:
        # Only the logits of seen tokens change: gathered, penalised and put back (a token seen
        # twice gets the same value twice), instead of passes over every row's whole vocabulary.
        row_ids, token_ids = _history(rows, repeated, pending, previous, device, prompt=True)
        penalty = to_device([rows[r].params.repetition_penalty for r in repeated], torch.float32, device)[row_ids]
        if len(repeated) < len(rows):
            row_ids = to_device(repeated, torch.long, device)[row_ids]
        picked = logits[row_ids, token_ids]
        logits[row_ids, token_ids] = torch.where(picked > 0, picked / penalty, picked * penalty)
    counted = [r for r, s in enumerate(rows)
               if _outputs(s, pending[r]) and (s.params.presence_penalty or s.params.frequency_penalty)]  # fmt: skip
    if counted:
        row_ids, token_ids = _history(rows, counted, pending, previous, device, prompt=False)
        counts = torch.zeros((len(counted), logits.shape[1]), dtype=logits.dtype, device=device)
        counts.index_put_((row_ids, token_ids), torch.ones_like(token_ids, dtype=logits.dtype), accumulate=True)
        frequency = to_device([rows[r].params.frequency_penalty for r in counted], torch.float32, device)[:, None]
        presence = to_device([rows[r].params.presence_penalty for r in counted], torch.float32, device)[:, None]
        which = to_device(counted, torch.long, device)
        logits[which] -= torch.where(counts > 0, frequency * counts + presence, 0.0)


def _history(rows: list[TokenSampler], which: list[int], pending: list[int | None], previous, device, prompt: bool):
    """(row, token) pairs of the tokens each selected row has seen (duplicates are harmless):
    its prompt's (already on the device), its recorded outputs, and its pending token. The row
    ids are built on the CPU and the outputs travel with the pending tokens' indices, so a step
    costs two copies and a gather whatever the number of rows, not a launch per row."""
    n = len(which)
    prompts = [rows[r].prompt_ids for r in which] if prompt else []
    outputs = [rows[r].output_ids for r in which]
    late_rows = [j for j, r in enumerate(which) if pending[r] is not None]
    late = [pending[which[j]] for j in late_rows]
    output_count = sum(len(ids) for ids in outputs)
    row_ids = np.concatenate((
        np.repeat(np.arange(n), [len(ids) for ids in prompts]) if prompt else np.empty(0, np.int64),
        np.repeat(np.arange(n), [len(ids) for ids in outputs]), np.array(late_rows, np.int64),
    ))  # fmt: skip
    host = np.fromiter(itertools.chain(itertools.chain.from_iterable(outputs), late), np.int64, output_count + len(late))
    from_host = to_device(torch.from_numpy(host), torch.long, device)
    token_parts = [*prompts, from_host[:output_count]]
    if late:
        token_parts.append(previous.index_select(0, from_host[output_count:]))
    return to_device(torch.from_numpy(row_ids), torch.long, device), torch.cat(token_parts)


def _draw(rows: list[TokenSampler], logits: torch.Tensor) -> torch.Tensor:
    """Temperature, top-k, top-p, then a draw, per row."""
    device, vocab = logits.device, logits.shape[1]
    logits = logits / to_device([s.params.temperature for s in rows], torch.float32, device)[:, None]
    top_k = [s.params.top_k if 0 < s.params.top_k < vocab else 0 for s in rows]
    cut = any(s.params.top_p < 1.0 for s in rows)
    top_p = to_device([s.params.top_p for s in rows], torch.float32, device)[:, None]
    if all(0 < k <= _CANDIDATES for k in top_k):
        # Only the top-k candidates can be drawn: work on them alone.
        values, indices = logits.topk(max(top_k), dim=-1)
        ranks = torch.arange(values.shape[1], device=device)[None, :]
        values = values.masked_fill(ranks >= to_device(top_k, torch.long, device)[:, None], float("-inf"))
        probs = torch.softmax(values, dim=-1)
        probs = _top_p(probs, top_p)
        return indices.gather(1, torch.multinomial(probs, 1)).squeeze(1)
    if any(top_k):
        no_cut = torch.full((), float("-inf"), device=device)
        kth = torch.stack([logits[r].topk(k).values[-1] if k else no_cut for r, k in enumerate(top_k)])
        logits = logits.masked_fill(logits < kth[:, None], float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if cut:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        probs = torch.zeros_like(probs).scatter_(-1, order, _top_p(sorted_probs, top_p))
    return torch.multinomial(probs, 1).squeeze(1)


def _top_p(sorted_probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep each row's smallest prefix whose mass reaches its top_p (the first always stays);
    `sorted_probs` is in descending order."""
    outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p
    return sorted_probs.masked_fill(outside, 0.0)
