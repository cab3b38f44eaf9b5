"""The paged KV cache and the reference attention over it (PyTorch ops; CPU and GPU).

Keys and values live in slots: slot = block * block_size + offset. Each step writes the new
tokens' keys and values to their slots, then each sequence attends over its own slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from flashsight.engine.kernels.varlen_spans import VarlenSpans


class PagedKVCache:
    def __init__(self, layers: int, num_blocks: int, block_size: int, kv_heads: int, head_dim: int, dtype, device):
        # One block more than the block manager hands out: padding rows of a fixed-size decode
        # batch (CUDA graphs) write their keys and values there.
        shape = (layers, (num_blocks + 1) * block_size, kv_heads, head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.scratch_slot = num_blocks * block_size

    @staticmethod
    def bytes_per_block(layers: int, block_size: int, kv_heads: int, head_dim: int, dtype) -> int:
        return 2 * layers * block_size * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def table_width(pages: int) -> int:
    """Block-table rows padded to a multiple of 16 entries. Triton compiles a kernel per
    alignment of its integer arguments, the tables' row stride among them: unpadded, a mixed
    step whose longest table has a new width mod 16 compiled paged-decode variants mid-serving
    (1.6 s of the engine thread in a W2 c100 profile). Padding entries are never read."""
    return -(-pages // 16) * 16


def padded_tables(tables: list[list[int]], rows: int, width: int, dtype=np.int64) -> np.ndarray:
    """Block tables as a [rows, width] array, each zero-padded; rows past the tables stay zero
    (a fixed-size batch's padding). Built in numpy: a hundred tables of ~100 pages as nested
    lists cost the engine thread a millisecond per step, ahead of the step's launch."""
    out = np.zeros((rows, width), dtype=dtype)
    for row, table in enumerate(tables):
        out[row, : len(table)] = table
    return out


def slot_of(block_table: list[int], index: int, page: int) -> int:
    """The cache slot of a sequence's token `index`."""
    return block_table[index // page] * page + index % page


def slots_of(block_table: list[int], start: int, end: int, page: int) -> torch.Tensor:
    """The cache slots of a sequence's tokens start..end: [end - start] int64 on the CPU."""
    index = torch.arange(start, end)
    return torch.tensor(block_table)[index // page] * page + index % page


@dataclass
class SeqSlice:
    q_start: int  # the sequence's first row in the step's flattened tokens
    q_len: int  # tokens computed this step
    context_slots: torch.Tensor  # slots of all its tokens so far, new ones included


@dataclass
class DecodeRows:
    """The rows of a mixed step that compute one token each: attended in one paged launch."""

    rows: torch.Tensor  # [D] their rows in the step's flattened tokens
    block_tables: torch.Tensor  # [D, pages] int32
    context_lens: torch.Tensor  # [D] int32


@dataclass
class BatchAttention:
    """One step's attention: `attend` is the callback the model's layers call. Single-token rows
    read the paged cache directly; longer chunks go through varlen attention, over the step's own
    keys when they start a sequence, else over keys gathered from the cache."""

    cache: PagedKVCache
    new_slots: torch.Tensor  # [T] where this step's keys and values go
    seqs: list[SeqSlice]  # the chunks of more than one token
    decode: DecodeRows | None
    ops: Any
    _chunk_spans: tuple | None = field(default=None, init=False, repr=False)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos, sin) -> torch.Tensor:
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        q, k = self.ops.rope_and_store(q, k, v, cos, sin, keys, values, self.new_slots)
        out = torch.empty_like(q)
        if self.decode is not None:
            d = self.decode
            out[d.rows] = self.ops.paged_decode_attention(
                q[d.rows], keys, values, d.block_tables, d.context_lens, self.cache.block_size
            )
        if self.seqs:
            self._attend_chunks(q, k, v, keys, values, out)
        return out

    def _attend_chunks(self, q, k, v, keys, values, out) -> None:
        """Chunks that start their sequence attend over the step's own keys; the others over
        their context, gathered from the cache."""
        fresh, later, later_slots = self._spans()
        if len(fresh):
            self.ops.varlen_attention(q, k, v, fresh, True, out)
        if len(later):
            self.ops.varlen_attention(q, keys[later_slots], values[later_slots], later, True, out)

    def _spans(self) -> tuple[VarlenSpans, VarlenSpans, torch.Tensor | None]:
        """The same for every layer of the step: worked out at the first."""
        if self._chunk_spans is None:
            fresh = [s for s in self.seqs if s.q_len == len(s.context_slots)]
            later = [s for s in self.seqs if s.q_len != len(s.context_slots)]
            k_lens = [len(s.context_slots) for s in later]
            later_spans = VarlenSpans([s.q_start for s in later], [s.q_len for s in later],
                                      [sum(k_lens[:i]) for i in range(len(k_lens))], k_lens)  # fmt: skip
            fresh_starts, fresh_lens = [s.q_start for s in fresh], [s.q_len for s in fresh]
            fresh_spans = VarlenSpans(fresh_starts, fresh_lens, fresh_starts, fresh_lens)
            slots = torch.cat([s.context_slots for s in later]) if later else None
            self._chunk_spans = (fresh_spans, later_spans, slots)
        return self._chunk_spans
