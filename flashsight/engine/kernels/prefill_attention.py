"""FlashAttention-style attention for many sequences of different lengths in one launch: the
text decoder's prefill chunks (causal, grouped KV heads, after any cached prefix). It also takes
non-causal batches (the vision tower's shape), which on a GPU now go through SDPA instead.

Sequence i's queries are rows q_starts[i] .. q_starts[i] + q_lens[i] of `q`; its keys and values
are rows k_starts[i] .. + k_lens[i] of `k` and `v`. Under `causal`, query j of a chunk sees keys
up to j + (k_len - q_len): the chunk follows the cached part of its context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from flashsight.engine.kernels.varlen_spans import VarlenSpans

_LOG2E = 1.4426950408889634


@triton.jit
def _attend_tile(acc, best, total, q, k_ptr, v_ptr, k_start, kv_head, stride_kt, stride_kh, stride_vt, stride_vh,
                 start, tokens, shift, k_len, scale_log2, dims,
                 MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """One key tile of the online softmax. Unmasked tiles (every key visible to every row of the
    block) skip the bounds and causal masks, which cost as much as the tile's arithmetic."""
    cols = start + tl.arange(0, BLOCK_N)
    if MASKED:
        col_ok = cols < k_len
        k = tl.load(k_ptr + (k_start + cols)[:, None] * stride_kt + kv_head * stride_kh + dims[None, :],
                    mask=col_ok[:, None], other=0.0)  # fmt: skip
        v = tl.load(v_ptr + (k_start + cols)[:, None] * stride_vt + kv_head * stride_vh + dims[None, :],
                    mask=col_ok[:, None], other=0.0)  # fmt: skip
    else:
        k = tl.load(k_ptr + (k_start + cols)[:, None] * stride_kt + kv_head * stride_kh + dims[None, :])
        v = tl.load(v_ptr + (k_start + cols)[:, None] * stride_vt + kv_head * stride_vh + dims[None, :])
    scores = tl.dot(q, tl.trans(k)) * scale_log2
    if MASKED:
        allowed = col_ok[None, :]
        if CAUSAL:
            allowed = allowed & (cols[None, :] <= tokens[:, None] + shift)
        scores = tl.where(allowed, scores, float("-inf"))
    # Every row sees key 0 in the first tile it computes, so `new_best` is finite from then on
    # and exp2(-inf - new_best) = 0 rescales the empty start.
    new_best = tl.maximum(best, tl.max(scores, axis=1))
    p = tl.exp2(scores - new_best[:, None])
    correction = tl.exp2(best - new_best)
    total = total * correction + tl.sum(p, axis=1)
    acc = acc * correction[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, new_best, total


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, q_starts_ptr, q_lens_ptr, k_starts_ptr, k_lens_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    scale_log2, group,
    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
    HEADS: tl.constexpr,
):  # fmt: skip
    """A program takes BLOCK_T tokens of HEADS query heads that share one KV head: its
    BLOCK_T * HEADS rows (token-major) multiply each key and value tile it loads."""
    # The last row blocks of a causal sequence have the most keys: they start first.
    block_t = tl.num_programs(0) - 1 - tl.program_id(0)
    first_head = tl.program_id(1) * HEADS
    seq = tl.program_id(2)
    q_len = tl.load(q_lens_ptr + seq)
    if block_t * BLOCK_T >= q_len:
        return
    q_start = tl.load(q_starts_ptr + seq).to(tl.int64)
    k_start = tl.load(k_starts_ptr + seq).to(tl.int64)
    k_len = tl.load(k_lens_ptr + seq)
    kv_head = first_head // group
    lanes = tl.arange(0, BLOCK_T * HEADS)
    tokens = block_t * BLOCK_T + lanes // HEADS
    heads = first_head + lanes % HEADS
    row_ok = tokens < q_len
    dims = tl.arange(0, HEAD_DIM)
    q_rows = (q_start + tokens)[:, None] * stride_qt + heads[:, None] * stride_qh
    q = tl.load(q_ptr + q_rows + dims[None, :], mask=row_ok[:, None], other=0.0)
    best = tl.full((BLOCK_T * HEADS,), float("-inf"), tl.float32)
    total = tl.zeros((BLOCK_T * HEADS,), tl.float32)
    acc = tl.zeros((BLOCK_T * HEADS, HEAD_DIM), tl.float32)
    shift = k_len - q_len  # keys before the chunk
    end = k_len
    visible_to_all = k_len
    if CAUSAL:
        end = tl.minimum(k_len, (block_t + 1) * BLOCK_T + shift)
        visible_to_all = tl.minimum(k_len, block_t * BLOCK_T + shift + 1)  # the block's first token's keys
    unmasked_end = visible_to_all // BLOCK_N * BLOCK_N
    for start in range(0, unmasked_end, BLOCK_N):
        acc, best, total = _attend_tile(acc, best, total, q, k_ptr, v_ptr, k_start, kv_head, stride_kt, stride_kh,
                                        stride_vt, stride_vh, start, tokens, shift, k_len, scale_log2, dims,
                                        MASKED=False, CAUSAL=CAUSAL, BLOCK_N=BLOCK_N)  # fmt: skip
    for start in range(unmasked_end, end, BLOCK_N):
        acc, best, total = _attend_tile(acc, best, total, q, k_ptr, v_ptr, k_start, kv_head, stride_kt, stride_kh,
                                        stride_vt, stride_vh, start, tokens, shift, k_len, scale_log2, dims,
                                        MASKED=True, CAUSAL=CAUSAL, BLOCK_N=BLOCK_N)  # fmt: skip
    out = acc / tl.where(total > 0, total, 1.0)[:, None]
    o_rows = (q_start + tokens)[:, None] * stride_ot + heads[:, None] * stride_oh
    tl.store(out_ptr + o_rows + dims[None, :], out.to(q.dtype), mask=row_ok[:, None])


# (tokens per block, BLOCK_N, num_warps, num_stages, query heads per block): the fastest of 41
# shapes on the H200 for W1's prompt alone, five in a launch, and a chunk after a cached prefix
# (benchmarks/prefill_tiles.py; BENCHMARKS.md, session 6). A block's rows are its tokens times its
# heads: 4 tokens of the 16 query heads that share a KV head load each key tile once for all 64
# rows, and the causal diagonal costs a 4-token sliver instead of a 64-token triangle.
TILES = (4, 32, 4, 3, 16)


def varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: VarlenSpans, causal: bool,
    out: torch.Tensor | None = None, tiles: tuple[int, ...] | None = None,
) -> torch.Tensor:  # fmt: skip
    """q: [Tq, heads, d]; k, v: [Tk, kv_heads, d] (channels contiguous). Writes each sequence's
    rows of `out` ([Tq, heads, d]; rows of no sequence are left as they are)."""
    heads, head_dim = q.shape[1], q.shape[2]
    out = torch.empty_like(q) if out is None else out
    if not len(spans):
        return out
    q_starts, q_lens, k_starts, k_lens = spans.on(q.device)
    block_t, block_n, warps, stages, heads_per_block = (*(tiles or TILES), 1)[:5]
    while (heads // k.shape[1]) % heads_per_block:  # a block's heads share a KV head: fewer, same rows
        heads_per_block, block_t = heads_per_block // 2, block_t * 2
    grid = (triton.cdiv(max(spans.q_lens), block_t), heads // heads_per_block, len(spans))
    _prefill_kernel[grid](
        q, k, v, out, q_starts, q_lens, k_starts, k_lens,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        head_dim**-0.5 * _LOG2E, heads // k.shape[1],
        CAUSAL=causal, HEAD_DIM=head_dim, BLOCK_T=block_t, BLOCK_N=block_n, HEADS=heads_per_block,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


def varlen_attention_reference(
    q, k, v, spans: VarlenSpans, causal: bool, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The same through SDPA, one sequence at a time, with the masks the reference model uses."""
    out = torch.empty_like(q) if out is None else out
    for qs, ql, ks, kl in zip(spans.q_starts, spans.q_lens, spans.k_starts, spans.k_lens):
        qi, ki, vi = q[qs : qs + ql], k[ks : ks + kl], v[ks : ks + kl]
        mask, is_causal = None, False
        if causal and 1 < ql < kl:  # a chunk after cached tokens: causal within the chunk
            mask = torch.ones(ql, kl, dtype=torch.bool, device=q.device).tril(diagonal=kl - ql)
        elif causal and ql > 1:
            is_causal = True
        attended = F.scaled_dot_product_attention(
            qi.transpose(0, 1), ki.transpose(0, 1), vi.transpose(0, 1),
            attn_mask=mask, is_causal=is_causal, enable_gqa=ki.shape[1] != qi.shape[1],
        )  # fmt: skip
        out[qs : qs + ql] = attended.transpose(0, 1)
    return out
