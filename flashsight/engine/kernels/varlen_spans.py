"""The layout of a varlen attention batch, shared by the reference and the Triton kernel."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from flashsight.engine.host_copy import to_device


@dataclass
class VarlenSpans:
    """Where each sequence's queries and keys sit in a varlen batch: sequence i's queries are
    rows q_starts[i] .. + q_lens[i], its keys rows k_starts[i] .. + k_lens[i]. Built once per step
    and shared by every layer, so the kernel's copy of it reaches the GPU once."""

    q_starts: list[int]
    q_lens: list[int]
    k_starts: list[int]
    k_lens: list[int]
    _on_device: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def square(cls, lens: list[int]) -> VarlenSpans:
        """Sequences that attend over their own rows only (prompts from their start, images)."""
        starts = [sum(lens[:i]) for i in range(len(lens))]
        return cls(starts, lens, starts, lens)

    def __len__(self) -> int:
        return len(self.q_lens)

    def on(self, device: torch.device) -> torch.Tensor:
        """[4, n] int32: q_starts, q_lens, k_starts, k_lens."""
        if self._on_device is None or self._on_device.device != device:
            rows = torch.tensor([self.q_starts, self.q_lens, self.k_starts, self.k_lens], dtype=torch.int32)
            self._on_device = to_device(rows, device)
        return self._on_device
