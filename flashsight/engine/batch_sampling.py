"""Choosing the next token for a whole step at once.

`TokenSampler.sample` does it for one sequence, with a handful of small GPU ops and a device sync
each; at a hundred sequences that costs more than the model's step. Here the rows that need no
per-request state beyond their token history (no grammar, no seeded generator) are penalised,
filtered and drawn together, with one sync for the step. The arithmetic is the per-row sampler's,
element for element, so greedy choices are identical; rows with a grammar or a seed still go
through their own sampler.
"""

from __future__ import annotations

import torch

from flashsight.engine.sampling import TokenSampler

_CANDIDATES = 1024  # top-k up to this many: top-p sorts only the candidates, not the vocabulary


def sample_batch(samplers: list[TokenSampler], logits: torch.Tensor) -> list[int]:
    """logits: [len(samplers), vocab] float32. Returns one token per row and records it."""
    tokens: list[int | None] = [None] * len(samplers)
    shared = [i for i, s in enumerate(samplers) if s.guide is None and s.generator is None]
    for i in set(range(len(samplers))) - set(shared):
        tokens[i] = samplers[i].sample(logits[i])
    if shared:
        rows = [samplers[i] for i in shared]
        chosen = _choose(rows, logits[shared] if len(shared) < len(samplers) else logits.clone())
        for i, sampler, token in zip(shared, rows, chosen):
            sampler.output_ids.append(token)
            tokens[i] = token
    return tokens  # type: ignore[return-value]


def _choose(rows: list[TokenSampler], logits: torch.Tensor) -> list[int]:
    _penalize(rows, logits)
    for r, sampler in enumerate(rows):
        if len(sampler.output_ids) < sampler.params.min_tokens and sampler.end_ids:
            logits[r, list(sampler.end_ids)] = float("-inf")
    greedy = [r for r, s in enumerate(rows) if s.params.temperature <= 0]
    drawn = [r for r, s in enumerate(rows) if s.params.temperature > 0]
    out = torch.empty(len(rows), dtype=torch.long, device=logits.device)
    if greedy:
        out[greedy] = logits[greedy].argmax(dim=-1)
    if drawn:
        out[drawn] = _draw([rows[r] for r in drawn], logits[drawn])
    return out.tolist()


def _penalize(rows: list[TokenSampler], logits: torch.Tensor) -> None:
    device = logits.device
    repeated = [r for r, s in enumerate(rows) if s.params.repetition_penalty != 1.0]
    if repeated:
        row_ids, token_ids = _history(rows, repeated, device, prompt=True)
        penalty = torch.tensor([rows[r].params.repetition_penalty for r in repeated], device=device)
        seen = torch.zeros((len(repeated), logits.shape[1]), dtype=torch.bool, device=device)
        seen[row_ids, token_ids] = True
        sub = logits[repeated]
        penalized = torch.where(sub > 0, sub / penalty[:, None], sub * penalty[:, None])
        logits[repeated] = torch.where(seen, penalized, sub)
    counted = [r for r, s in enumerate(rows) if s.output_ids and (s.params.presence_penalty or s.params.frequency_penalty)]
    if counted:
        row_ids, token_ids = _history(rows, counted, device, prompt=False)
        counts = torch.zeros((len(counted), logits.shape[1]), dtype=logits.dtype, device=device)
        counts.index_put_((row_ids, token_ids), torch.ones_like(token_ids, dtype=logits.dtype), accumulate=True)
        frequency = torch.tensor([rows[r].params.frequency_penalty for r in counted], device=device)[:, None]
        presence = torch.tensor([rows[r].params.presence_penalty for r in counted], device=device)[:, None]
        logits[counted] -= torch.where(counts > 0, frequency * counts + presence, 0.0)


def _history(rows: list[TokenSampler], which: list[int], device, prompt: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, token) pairs of the tokens each selected row has seen (duplicates are harmless)."""
    parts, row_ids = [], []
    for j, r in enumerate(which):
        sampler = rows[r]
        if prompt:
            parts.append(sampler.prompt_ids)
            row_ids.append(torch.full((len(sampler.prompt_ids),), j, dtype=torch.long))
        parts.append(torch.tensor(sampler.output_ids, dtype=torch.long))
        row_ids.append(torch.full((len(sampler.output_ids),), j, dtype=torch.long))
    tokens = torch.cat([p.to(device) for p in parts])
    return torch.cat(row_ids).to(device), tokens


def _draw(rows: list[TokenSampler], logits: torch.Tensor) -> torch.Tensor:
    """Temperature, top-k, top-p, then a draw, per row."""
    device, vocab = logits.device, logits.shape[1]
    temperature = torch.tensor([s.params.temperature for s in rows], device=device)[:, None]
    logits = logits / temperature
    top_k = [s.params.top_k if 0 < s.params.top_k < vocab else 0 for s in rows]
    top_p = torch.tensor([s.params.top_p for s in rows], device=device)[:, None]
    if all(0 < k <= _CANDIDATES for k in top_k):
        # Only the top-k candidates can be drawn: work on them alone.
        values, indices = logits.topk(max(top_k), dim=-1)
        ranks = torch.arange(values.shape[1], device=device)[None, :]
        values = values.masked_fill(ranks >= torch.tensor(top_k, device=device)[:, None], float("-inf"))
        probs = torch.softmax(values, dim=-1)
        probs = _top_p(probs, top_p)
        return indices.gather(1, torch.multinomial(probs, 1)).squeeze(1)
    if any(top_k):
        kth = torch.stack([logits[r].topk(k).values[-1] if k else logits.new_tensor(float("-inf"))
                           for r, k in enumerate(top_k)])  # fmt: skip
        logits = logits.masked_fill(logits < kth[:, None], float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if (top_p < 1.0).any():
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        probs = torch.zeros_like(probs).scatter_(-1, order, _top_p(sorted_probs, top_p))
    return torch.multinomial(probs, 1).squeeze(1)


def _top_p(sorted_probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep each row's smallest prefix whose mass reaches its top_p (the first always stays);
    `sorted_probs` is in descending order."""
    outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p
    return sorted_probs.masked_fill(outside, 0.0)
