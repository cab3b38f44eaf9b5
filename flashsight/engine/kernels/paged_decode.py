"""Decode attention straight over the paged KV cache: one new query token per sequence attends to
all its cached keys, read page by page through the block table (no gather into a copy first).

One program per (sequence, KV head, split) holds that KV head's whole group of query heads, so
keys and values are read once for the group and the scores are a small matrix product. With few
sequences the context is split across programs (flash-decoding) so the whole GPU reads the cache,
and a second small kernel merges the splits. Shapes are fixed for a given batch size, so a CUDA
graph can capture both; padding rows (context 0) write zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from flashsight.engine.kernels.dependent_launch import enabled as pdl_enabled, wait_for_previous


@triton.jit
def _paged_decode_kernel(
    q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, out_ptr, part_acc_ptr, part_stats_ptr,
    stride_qt, stride_qh, stride_ks, stride_kh, stride_vs, stride_vh, stride_tt, stride_ot, stride_oh,
    scale, group, heads,
    GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE: tl.constexpr, TILE: tl.constexpr,
    SPLITS: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    wait_for_previous(PDL)
    seq = tl.program_id(0).to(tl.int64)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context = tl.load(lens_ptr + seq)
    per_split = tl.cdiv(tl.cdiv(context, SPLITS), TILE) * TILE
    first = split * per_split
    last = tl.minimum(context, first + per_split)
    rows = tl.arange(0, GROUP_PAD)
    row_ok = rows < group
    heads_of_group = kv_head * group + rows
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + seq * stride_qt + heads_of_group[:, None] * stride_qh + dims[None, :], mask=row_ok[:, None], other=0.0)
    best = tl.full((GROUP_PAD,), float("-inf"), tl.float32)
    total = tl.zeros((GROUP_PAD,), tl.float32)
    acc = tl.zeros((GROUP_PAD, HEAD_DIM), tl.float32)
    for start in range(first, last, TILE):
        offsets = start + tl.arange(0, TILE)
        valid = offsets < last
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
    if SPLITS == 1:
        out = acc / tl.where(total > 0, total, 1.0)[:, None]
        tl.store(out_ptr + seq * stride_ot + heads_of_group[:, None] * stride_oh + dims[None, :], out.to(q.dtype),
                 mask=row_ok[:, None])
    else:  # partials [B, heads, SPLITS, d] and (max, sum) [B, heads, SPLITS, 2], merged below
        part = (seq * heads + heads_of_group) * SPLITS + split
        tl.store(part_acc_ptr + part[:, None] * HEAD_DIM + dims[None, :], acc, mask=row_ok[:, None])
        tl.store(part_stats_ptr + part * 2, best, mask=row_ok)
        tl.store(part_stats_ptr + part * 2 + 1, total, mask=row_ok)


@triton.jit
def _merge_splits_kernel(part_acc_ptr, part_stats_ptr, out_ptr, stride_ot, stride_oh, heads,
                         HEAD_DIM: tl.constexpr, SPLITS: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
    wait_for_previous(PDL)
    seq = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    parts = (seq * heads + head) * SPLITS + tl.arange(0, SPLITS)
    best = tl.load(part_stats_ptr + parts * 2)
    total = tl.load(part_stats_ptr + parts * 2 + 1)
    overall = tl.max(best, axis=0)
    overall = tl.where(overall == float("-inf"), 0.0, overall)
    weight = tl.where(total > 0, tl.exp(best - overall), 0.0)
    dims = tl.arange(0, HEAD_DIM)
    acc = tl.load(part_acc_ptr + parts[:, None] * HEAD_DIM + dims[None, :])
    merged = tl.sum(acc * weight[:, None], axis=0)
    norm = tl.sum(total * weight, axis=0)
    out = merged / tl.where(norm > 0, norm, 1.0)
    tl.store(out_ptr + seq * stride_ot + head * stride_oh + dims, out.to(out_ptr.dtype.element_ty))


def paged_decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    context_lens: torch.Tensor, page_size: int, splits: int | None = None, tile: int | None = None, warps: int = 4,
) -> torch.Tensor:  # fmt: skip
    """q: [B, heads, d]; k_cache, v_cache: [slots, kv_heads, d]; block_tables: [B, max_pages] int32;
    context_lens: [B] int32 (tokens to attend to, the new one included). Returns [B, heads, d].
    splits, tile, warps: the launch's shape (benchmarks/paged_decode_splits.py); default: ours."""
    batch, heads, head_dim = q.shape
    kv_heads = k_cache.shape[1]
    group = heads // kv_heads
    out = torch.empty_like(q)
    splits = splits or splits_for(batch * kv_heads, q.device)
    tile = tile or tile_for(batch * kv_heads * splits, splits, q.device)
    part_acc = part_stats = out  # unused when the context is not split
    pdl = pdl_enabled(q)
    if splits > 1:
        part_acc = torch.empty((batch, heads, splits, head_dim), dtype=torch.float32, device=q.device)
        part_stats = torch.empty((batch, heads, splits, 2), dtype=torch.float32, device=q.device)
    _paged_decode_kernel[(batch, kv_heads, splits)](
        q, k_cache, v_cache, block_tables, context_lens, out, part_acc, part_stats,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1),
        block_tables.stride(0), out.stride(0), out.stride(1), head_dim**-0.5, group, heads,
        GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim, PAGE=page_size, TILE=tile,
        SPLITS=splits, num_warps=warps, PDL=pdl, launch_pdl=pdl > 0,
    )  # fmt: skip
    if splits > 1:
        _merge_splits_kernel[(batch, heads)](part_acc, part_stats, out, out.stride(0), out.stride(1), heads,
                                             HEAD_DIM=head_dim, SPLITS=splits, PDL=pdl, launch_pdl=pdl > 0)  # fmt: skip
    return out


def splits_for(programs: int, device: torch.device) -> int:
    """Enough context splits to give every multiprocessor about two programs."""
    processors = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8
    splits = 1
    while splits < 32 and programs * splits * 2 <= 2 * processors:
        splits *= 2
    return splits


def tile_for(programs: int, splits: int, device: torch.device) -> int:
    """Key rows per loop step. Graph replays on the H200 (benchmarks/paged_decode_splits.py):
    with up to about two programs per multiprocessor and a long enough share of the context
    each, 128 rows keep more reads in flight (100 sequences of 1450 tokens: 45.6 against
    55.5 us); with more programs, or short splits, 64 wastes less."""
    processors = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8
    return 128 if splits <= 4 and programs <= 2 * processors else 64


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
