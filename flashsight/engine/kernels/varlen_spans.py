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
    _packed: PackedRows | None | bool = field(default=False, repr=False)  # False: not worked out yet

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

    def packed_on(self, device: torch.device) -> PackedRows | None:
        """The spans as FlashAttention's cumulative lengths, when each side's sequences sit back
        to back; None when other rows (a mixed step's decode rows) sit between them. Worked out
        once per step, like `on`."""
        if self._packed is False:
            queries, keys = _back_to_back(self.q_starts, self.q_lens), _back_to_back(self.k_starts, self.k_lens)
            self._packed = None
            if queries is not None and keys is not None and len(self):
                (q_rows, cu_q), (k_rows, cu_k) = queries, keys
                self._packed = PackedRows(q_rows, k_rows, to_device(cu_q, torch.int32, device),
                                          to_device(cu_k, torch.int32, device), max(self.q_lens), max(self.k_lens))  # fmt: skip
        return self._packed


@dataclass
class PackedRows:
    """Back-to-back sequences: sequence i's queries are rows q_rows.start + cu_q[i] .. + cu_q[i + 1]."""

    q_rows: slice
    k_rows: slice
    cu_q: torch.Tensor  # [n + 1] int32, from 0
    cu_k: torch.Tensor
    max_q: int
    max_k: int


def _back_to_back(starts: list[int], lens: list[int]) -> tuple[slice, list[int]] | None:
    """(the rows they cover, cumulative lengths) when each sequence starts where the last ended."""
    cumulative = [0]
    for start, length in zip(starts, lens):
        if start != starts[0] + cumulative[-1]:
            return None
        cumulative.append(cumulative[-1] + length)
    first = starts[0] if starts else 0
    return slice(first, first + cumulative[-1]), cumulative


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
