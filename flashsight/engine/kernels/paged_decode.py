"""Decode attention straight over the paged KV cache: one new query token per sequence attends to
all its cached keys, read page by page through the block table (no gather into a copy first).

One program per (sequence, KV head) holds that KV head's whole group of query heads, so keys and
values are read once for the group and the scores are a small matrix product. Its inputs have
fixed shapes for a given batch size, so a CUDA graph can capture it; padding rows (context 0)
write zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


@triton.jit
def _paged_decode_kernel(
    q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, out_ptr,
    stride_qt, stride_qh, stride_ks, stride_kh, stride_vs, stride_vh, stride_tt, stride_ot, stride_oh,
    scale, group,
    GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE: tl.constexpr, TILE: tl.constexpr,
):  # fmt: skip
    seq = tl.program_id(0).to(tl.int64)
    kv_head = tl.program_id(1)
    context = tl.load(lens_ptr + seq)
    rows = tl.arange(0, GROUP_PAD)
    row_ok = rows < group
    heads = kv_head * group + rows
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + seq * stride_qt + heads[:, None] * stride_qh + dims[None, :], mask=row_ok[:, None], other=0.0)
    best = tl.full((GROUP_PAD,), float("-inf"), tl.float32)
    total = tl.zeros((GROUP_PAD,), tl.float32)
    acc = tl.zeros((GROUP_PAD, HEAD_DIM), tl.float32)
    for start in range(0, context, TILE):
        offsets = start + tl.arange(0, TILE)
        valid = offsets < context
        page = tl.load(tables_ptr + seq * stride_tt + offsets // PAGE, mask=valid, other=0).to(tl.int64)
        slots = page * PAGE + offsets % PAGE
        k = tl.load(k_ptr + slots[:, None] * stride_ks + kv_head * stride_kh + dims[None, :], mask=valid[:, None], other=0.0)
        scores = tl.dot(q, tl.trans(k)) * scale
        scores = tl.where(valid[None, :], scores, float("-inf"))
        new_best = tl.maximum(best, tl.max(scores, axis=1))
        p = tl.exp(scores - new_best[:, None])
        correction = tl.exp(best - new_best)
        total = total * correction + tl.sum(p, axis=1)
        v = tl.load(v_ptr + slots[:, None] * stride_vs + kv_head * stride_vh + dims[None, :], mask=valid[:, None], other=0.0)
        acc = acc * correction[:, None] + tl.dot(p.to(v.dtype), v)
        best = new_best
    out = acc / tl.where(total > 0, total, 1.0)[:, None]
    tl.store(out_ptr + seq * stride_ot + heads[:, None] * stride_oh + dims[None, :], out.to(q.dtype), mask=row_ok[:, None])


def paged_decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    context_lens: torch.Tensor, page_size: int,
) -> torch.Tensor:  # fmt: skip
    """q: [B, heads, d]; k_cache, v_cache: [slots, kv_heads, d]; block_tables: [B, max_pages] int32;
    context_lens: [B] int32 (tokens to attend to, the new one included). Returns [B, heads, d]."""
    batch, heads, head_dim = q.shape
    kv_heads = k_cache.shape[1]
    group = heads // kv_heads
    out = torch.empty_like(q)
    _paged_decode_kernel[(batch, kv_heads)](
        q, k_cache, v_cache, block_tables, context_lens, out,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1),
        block_tables.stride(0), out.stride(0), out.stride(1), head_dim**-0.5, group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim, PAGE=page_size, TILE=64,
    )  # fmt: skip
    return out


def paged_decode_attention_reference(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    context_lens: torch.Tensor, page_size: int,
) -> torch.Tensor:  # fmt: skip
    """The same, one sequence at a time: gather its keys and values, then SDPA."""
    out = torch.zeros_like(q)
    for i, context in enumerate(context_lens.tolist()):
        if context == 0:
            continue
        positions = torch.arange(context, device=block_tables.device)
        slots = block_tables[i, positions // page_size].long() * page_size + positions % page_size
        keys, values = k_cache[slots].transpose(0, 1), v_cache[slots].transpose(0, 1)
        attended = F.scaled_dot_product_attention(q[i : i + 1].transpose(0, 1), keys, values, enable_gqa=True)
        out[i] = attended.transpose(0, 1)[0]
    return out
