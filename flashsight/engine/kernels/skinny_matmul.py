"""x @ W.T (+ bias) for decode-sized batches (1 to 16 rows), where the product reads the weights
once and is bound by memory, not arithmetic.

cuBLAS tiles such a product over the output's columns only: the text decoder's q/k/v and output
projections (4096 x 4096-4608) make a few dozen tiles, too few for the H200's 132
multiprocessors, and it read those weights at 3.2-3.7 of the ~4.3 TB/s. Here each program also
takes a slice of the inner dimension (split-K), so every multiprocessor streams weights. The
weight tile is the wide operand of the matrix instruction (swap-AB), so a batch of one row still
fills it. With more than one slice, each writes float32 partial sums. A second pass adds them in
a fixed order, so the result does not depend on which slice ends first; it also adds the bias and
rounds. (Or the norm after the product does that pass: norms.add_rms_norm_of_sum.)

On Hopper each program can ask L2 for the first stretch of its weights before it waits for the
kernel before it (dependent launch; PREFETCH_COLUMNS, off until a sweep on the device shows it
pays): weights never depend on that kernel, so the stream would start while the kernel before
drains, instead of after.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from flashsight.engine.kernels.activation import silu_mul
from flashsight.engine.kernels.dependent_launch import enabled as pdl_enabled, wait_for_previous


MAX_ROWS = 16  # above this cuBLAS is as fast (32 rows and more: benchmarks/skinny_gemm.py)
PREFETCH_COLUMNS = 0  # of each weight row, asked of L2 before the wait; 0: none (any depth cost the H100's step: session 16)


class SkinnyPlan(NamedTuple):
    block_n: int  # output columns (weight rows) per program
    block_k: int  # inner-dimension step
    splits: int  # slices of the inner dimension
    warps: int
    stages: int


@triton.jit
def _skinny_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr, rows, n, k, blocks_per_split,
    stride_x, stride_w, stride_split, stride_out,
    HAS_BIAS: tl.constexpr, PARTIAL: tl.constexpr, EVEN_K: tl.constexpr, GATED: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr,
):  # fmt: skip
    """x @ W.T over one slice of k for BLOCK_N weight rows. GATED: W is [2n, k], a gate's n rows
    then an up projection's, and the program's rows pair gate row j with up row j (even and odd
    tile rows) for BLOCK_N / 2 outputs silu(gate) * up: SwiGLU without a launch of its own.
    PREFETCH: columns of each of the program's weight rows to ask of L2 before the wait."""
    split = tl.program_id(1)
    if GATED:
        r = tl.arange(0, BLOCK_N)
        cols = tl.program_id(0) * (BLOCK_N // 2) + r // 2
        w_rows = cols + (r % 2) * n
    else:
        cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        w_rows = cols
    toks = tl.arange(0, BLOCK_T)
    col_ok = cols < n
    tok_ok = toks < rows
    acc = tl.zeros((BLOCK_N, BLOCK_T), tl.float32)
    first = split * blocks_per_split * BLOCK_K
    if PREFETCH > 0:
        span = tl.minimum(tl.minimum(PREFETCH, blocks_per_split * BLOCK_K), k - first) // 8 * 8  # whole 16 bytes
        _prefetch_l2(w_ptr + w_rows.to(tl.int64) * stride_w + first, span * 2, col_ok & (span > 0))
    wait_for_previous(PDL)
    for step in range(0, blocks_per_split):
        ks = first + step * BLOCK_K + tl.arange(0, BLOCK_K)
        if EVEN_K:
            w = tl.load(w_ptr + w_rows[:, None].to(tl.int64) * stride_w + ks[None, :], mask=col_ok[:, None], other=0.0)
            x = tl.load(x_ptr + toks[:, None] * stride_x + ks[None, :], mask=tok_ok[:, None], other=0.0)
        else:
            k_ok = ks < k
            w = tl.load(w_ptr + w_rows[:, None].to(tl.int64) * stride_w + ks[None, :],
                        mask=col_ok[:, None] & k_ok[None, :], other=0.0)  # fmt: skip
            x = tl.load(x_ptr + toks[:, None] * stride_x + ks[None, :], mask=tok_ok[:, None] & k_ok[None, :], other=0.0)
        acc = tl.dot(w, tl.trans(x), acc)
    out = tl.trans(acc)  # [BLOCK_T, BLOCK_N]
    if GATED:
        dtype = out_ptr.dtype.element_ty
        gate, up = tl.split(tl.reshape(out, (BLOCK_T, BLOCK_N // 2, 2)))
        cols = tl.program_id(0) * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
        mask = tok_ok[:, None] & (cols < n)[None, :]
        # The product's outputs rounded first, as the unfused path writes them.
        tl.store(out_ptr + toks[:, None] * stride_out + cols[None, :], silu_mul(gate.to(dtype), up.to(dtype)), mask=mask)
    elif PARTIAL:
        mask = tok_ok[:, None] & col_ok[None, :]
        tl.store(out_ptr + split * stride_split + toks[:, None] * stride_out + cols[None, :], out, mask=mask)
    else:
        mask = tok_ok[:, None] & col_ok[None, :]
        if HAS_BIAS:
            out += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + toks[:, None] * stride_out + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _prefetch_l2(pointers, nbytes, mask):
    """Ask L2 for nbytes (a multiple of 16) from each 16-byte aligned pointer where mask holds
    (a Hopper bulk prefetch: no registers held, nothing waited for)."""
    tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.b32 p, $3, 0; @p cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }",
        "=r,l,r,r", [pointers, nbytes, mask.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1,
    )  # fmt: skip


@triton.jit
def _sum_splits_kernel(part_ptr, bias_ptr, out_ptr, n, total, stride_split,
                       SPLITS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
    wait_for_previous(PDL)
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offsets < total
    acc = tl.load(part_ptr + offsets, mask=ok, other=0.0)
    for split in tl.static_range(1, SPLITS):
        acc += tl.load(part_ptr + split * stride_split + offsets, mask=ok, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offsets % n, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + offsets, acc.to(out_ptr.dtype.element_ty), mask=ok)


def plan_for(n: int, k: int) -> SkinnyPlan:
    """The launch for an [n, k] weight, from the H100's fastest at one row, each product timed
    inside a captured decode step (BENCHMARKS.md, sessions 15-16; the H200's of session 6 before):
    64-column tiles; when they alone make 256 programs or more (gate/up, the LM head), one slice
    of 128-deep steps, four in flight; else 256-deep steps, three in flight, in as many slices as
    make ~128 programs (q/k/v: one, o: two), no deeper than 4096, and two for down (k = 13696)."""
    tiles = triton.cdiv(n, 64)
    if tiles >= 256:
        return SkinnyPlan(64, 128, 1, 4, 4)
    splits = 2 if k > 8192 else min(8, max(1, 128 // tiles, triton.cdiv(k, 4096)))
    return SkinnyPlan(64, 256, splits, 4, 3)


def block_rows(rows: int) -> int:
    """The batch rows one program holds: a power of two, 16 at least (the matrix instruction's
    narrowest operand)."""
    return max(16, triton.next_power_of_2(rows))


def skinny_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, plan: SkinnyPlan | None = None
) -> torch.Tensor:
    """x: [rows, k] (a few rows), weight: [n, k], both row-major -> [rows, n] in x's dtype."""
    plan = plan or plan_for(*weight.shape)
    out = torch.empty((x.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    if _slices(x.shape[1], plan) == 1:
        _launch(x, weight, bias, plan, out)
        return out
    partial = skinny_partials(x, weight, plan)
    total, block = out.numel(), 1024
    bias_arg = bias if bias is not None else weight  # never read without HAS_BIAS
    pdl = pdl_enabled(x)
    _sum_splits_kernel[(triton.cdiv(total, block),)](
        partial, bias_arg, out, out.shape[1], total, partial.stride(0),
        SPLITS=partial.shape[0], HAS_BIAS=bias is not None, BLOCK=block, PDL=pdl, launch_pdl=pdl > 0,
    )  # fmt: skip
    return out


def skinny_silu_and_mul(x: torch.Tensor, gate_up: torch.Tensor, plan: SkinnyPlan | None = None) -> torch.Tensor:
    """silu(x @ gate.T) * (x @ up.T) for gate_up = [gate; up] ([2n, k]) -> [rows, n], in one
    launch of one slice (silu needs whole sums). A program's 64 weight rows are 32 of each, so it
    streams as many bytes as a plain 64-row tile (GATED in the kernel)."""
    plan = plan or plan_for(*gate_up.shape)
    n = gate_up.shape[0] // 2
    out = torch.empty((x.shape[0], n), dtype=x.dtype, device=x.device)
    _launch(x, gate_up, None, plan._replace(splits=1), out, gated=True)
    return out


def skinny_partials(x: torch.Tensor, weight: torch.Tensor, plan: SkinnyPlan | None = None) -> torch.Tensor:
    """The float32 sums of x @ weight.T over each slice of the inner dimension: [slices, rows, n],
    for a kernel that adds them up as it reads them (norms.add_rms_norm_of_sum)."""
    plan = plan or plan_for(*weight.shape)
    partial = torch.empty((_slices(x.shape[1], plan), x.shape[0], weight.shape[0]), dtype=torch.float32, device=x.device)
    _launch(x, weight, None, plan, partial)
    return partial


def _slices(k: int, plan: SkinnyPlan) -> int:
    k_blocks = triton.cdiv(k, plan.block_k)
    return triton.cdiv(k_blocks, triton.cdiv(k_blocks, plan.splits))  # no empty slice


def _launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, plan: SkinnyPlan, target: torch.Tensor,
            gated: bool = False):  # fmt: skip
    """Into `target`: [rows, n] rounded (one slice, bias added), [slices, rows, n] float32, or
    gated: [rows, n / 2] rounded."""
    rows, k = x.shape
    n = weight.shape[0] // 2 if gated else weight.shape[0]
    block_n, block_k, _, warps, stages = plan
    k_blocks = triton.cdiv(k, block_k)
    splits = _slices(k, plan)
    per_split = triton.cdiv(k_blocks, splits)
    partial = target.dim() == 3
    pdl = pdl_enabled(x)
    # The bulk prefetch wants 16-byte aligned rows; it is a Hopper instruction, as is the wait.
    aligned = weight.stride(0) * weight.element_size() % 16 == 0 and weight.data_ptr() % 16 == 0
    prefetch = PREFETCH_COLUMNS if pdl and aligned and block_k * weight.element_size() % 16 == 0 else 0
    _skinny_kernel[(triton.cdiv(n, block_n // 2 if gated else block_n), splits)](
        x, weight, bias if bias is not None else weight, target, rows, n, k, per_split,
        x.stride(0), weight.stride(0), target.stride(0) if partial else 0, target.stride(-2),
        HAS_BIAS=bias is not None, PARTIAL=partial, EVEN_K=k % block_k == 0 and k_blocks % per_split == 0,
        GATED=gated, BLOCK_T=block_rows(rows), BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps, num_stages=stages,
        PDL=pdl, PREFETCH=prefetch, launch_pdl=pdl > 0,
    )  # fmt: skip
