"""The paged KV cache and the reference attention over it (PyTorch ops; CPU and GPU).

Keys and values live in slots: slot = block * block_size + offset. Each step writes the new
tokens' keys and values to their slots, then each sequence attends over its own slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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

    def slots(self, block_table: list[int], start: int, end: int, device) -> torch.Tensor:
        positions = torch.arange(start, end)
        table = torch.tensor(block_table, dtype=torch.long)
        return (table[positions // self.block_size] * self.block_size + positions % self.block_size).to(device)


@dataclass
class SeqSlice:
    q_start: int  # the sequence's first row in the step's flattened tokens
    q_len: int  # tokens computed this step
    context_slots: torch.Tensor  # slots of all its tokens so far, new ones included


@dataclass
class BatchAttention:
    """One step's attention: `attend` is the callback the model's layers call."""

    cache: PagedKVCache
    new_slots: torch.Tensor  # [T] where this step's keys and values go
    seqs: list[SeqSlice]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.cache.keys[layer, self.new_slots] = k
        self.cache.values[layer, self.new_slots] = v
        out = torch.empty_like(q)
        for s in self.seqs:
            rows = slice(s.q_start, s.q_start + s.q_len)
            out[rows] = self._attend_one(layer, q[rows], s)
        return out

    def _attend_one(self, layer: int, q: torch.Tensor, s: SeqSlice) -> torch.Tensor:
        keys = self.cache.keys[layer, s.context_slots]
        values = self.cache.values[layer, s.context_slots]
        context, new = keys.shape[0], q.shape[0]
        mask = None
        if 1 < new < context:  # a chunk after cached tokens: causal within the chunk
            mask = torch.ones(new, context, dtype=torch.bool, device=q.device).tril(diagonal=context - new)
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1), keys.transpose(0, 1), values.transpose(0, 1),
            attn_mask=mask, is_causal=new > 1 and new == context, enable_gqa=True,
        )  # fmt: skip
        return out.transpose(0, 1)
