"""Choosing the next token: penalties, temperature, top-k, top-p, seeded sampling.

Order and semantics follow transformers and vLLM: the repetition penalty (prompt and output)
divides positive logits and multiplies negative ones; presence and frequency penalties (OpenAI)
count output tokens only; then temperature, top-k, top-p.
"""

from __future__ import annotations

import torch

from flashsight.engine.host_copy import to_device
from flashsight.engine.types import SamplingParams


class TokenSampler:
    """Per-request sampling state: the tokens seen so far and the request's random generator."""

    def __init__(
        self, params: SamplingParams, prompt_ids: list[int], end_ids: set[int], device: torch.device, guide=None
    ):
        self.params = params
        self.guide = guide  # a GrammarGuide when the output is constrained
        self.end_ids = end_ids  # EOS and stop-token ids, masked until min_tokens are out
        self.device = device
        self._prompt_ids = sorted(set(prompt_ids))
        self._prompt_ids_on_device: torch.Tensor | None = None
        self.output_ids: list[int] = []
        self.generator = None
        if params.seed is not None and params.temperature > 0:
            self.generator = torch.Generator(device=device).manual_seed(params.seed)

    @property
    def prompt_ids(self) -> torch.Tensor:
        """The prompt's distinct token ids on the device, copied there on first use (by the
        engine's thread, never the requester's: the copy must not wait on the GPU's queue)."""
        if self._prompt_ids_on_device is None:
            self._prompt_ids_on_device = to_device(self._prompt_ids, torch.long, self.device)
        return self._prompt_ids_on_device

    def record(self, token: int) -> None:
        """The token chosen for this request, once it is known on the CPU."""
        if self.guide is not None:
            self.guide.accept(token)
        self.output_ids.append(token)

    def sample(self, logits: torch.Tensor) -> int:
        """logits: [vocab] float32 for the next position. The caller records the token."""
        logits = self._penalize(logits.clone())
        if len(self.output_ids) < self.params.min_tokens and self.end_ids:
            logits.index_fill_(0, to_device(sorted(self.end_ids), torch.long, logits.device), float("-inf"))
        if self.guide is not None:
            self.guide.mask(logits)
        if self.params.temperature <= 0:
            token = int(torch.argmax(logits))
        else:
            token = self._draw(logits / self.params.temperature)
        return token

    def _penalize(self, logits: torch.Tensor) -> torch.Tensor:
        p = self.params
        if p.repetition_penalty != 1.0:
            seen = self.prompt_ids
            if self.output_ids:
                seen = torch.cat([seen, to_device(self.output_ids, torch.long, self.device)]).unique()
            picked = logits[seen]
            logits[seen] = torch.where(picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty)
        if self.output_ids and (p.presence_penalty or p.frequency_penalty):
            ids, counts = to_device(self.output_ids, torch.long, self.device).unique(return_counts=True)
            logits[ids] -= p.frequency_penalty * counts.to(logits.dtype) + p.presence_penalty
        return logits

    def _draw(self, logits: torch.Tensor) -> int:
        p = self.params
        if 0 < p.top_k < logits.shape[-1]:
            kth = torch.topk(logits, p.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
            outside = sorted_probs.cumsum(-1) - sorted_probs >= p.top_p
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator))
