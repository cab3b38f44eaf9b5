"""The layout of a varlen attention batch, shared by the reference and the Triton kernel."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from flashsight.engine.host_copy import to_device


@dataclass
class VarlenSpans:
    """Where each sequence's queries and keys sit in a varlen batch: sequence i's queries are
    rows q_starts[i] .. + q_lens[i], its keys rows k_starts[i] .. + k_lens[i]. Built once per step
    and shared by every layer, so the kernel's copy of it reaches the GPU once: a copy from a
    Python list must not wait for the GPU's queue to drain (host_copy), and one per layer kept the
    CPU from ever getting ahead of the GPU."""

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
        """[4, n'] int32: q_starts, q_lens, k_starts, k_lens (n' >= n)."""
        if self._on_device is None or self._on_device.device != device:
            # Rows padded to whole 16 bytes: Triton compiles a kernel per pointer alignment, and
            # unaligned rows would compile new variants as batch sizes change, mid-serving.
            pad = [0] * (-len(self) % 4)
            rows = [self.q_starts + pad, self.q_lens + pad, self.k_starts + pad, self.k_lens + pad]
            self._on_device = to_device(rows, torch.int32, device)
        return self._on_device


def same_length_runs(starts: list[int], lens: list[int]) -> list[tuple[int, int, int]]:
    """(first row, how many, length) for each run of back-to-back sequences of one length."""
    runs: list[tuple[int, int, int]] = []
    for start, length in zip(starts, lens):
        if runs and runs[-1][2] == length and runs[-1][0] + runs[-1][1] * length == start:
            first, count, _ = runs[-1]
            runs[-1] = (first, count + 1, length)
        else:
            runs.append((start, 1, length))
    return runs
