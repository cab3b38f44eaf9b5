"""Whether the MLP's gate/up product can gate its own output (SwiGLU in the product's epilogue)
as fast as cuBLAS computes the product alone (GPU only).

    python benchmarks/gated_matmul.py [--seconds 3] [--shapes text vision] [--quick]

At a loaded W1 level the SwiGLU pass after cuBLAS's gate/up product costs ~2.7 ms of GPU a
request (run 70): it reads the product's [rows, 2n] output and writes [rows, n], at copy
bandwidth. A product that gates in its epilogue writes [rows, n] once and reads nothing more, but
cuBLAS has no gated epilogue, so the product would have to be a Triton kernel: this times such
kernels (plain pointer loads; TMA descriptors; TMA with one resident program a multiprocessor)
against cuBLAS + the engine's SwiGLU kernel, each sustained for --seconds (the power limit sets
the clock of a loaded level, not the boost clock a short timing sees), alternated, and checks
each against the reference first.

Session 18 (H100, Triton 3.6): they lose. The best fused kernel ran the text shape in 2.72 ms
against 2.40 for cuBLAS + the SwiGLU pass (cuBLAS alone 2.20 ms, 715 TFLOP/s; the Triton
products 530-580), and the vision shape in 1.30 against 1.23. In the engine, W1 c100 fell from
13.11 to 12.45 req/s and W2 c100 from 47.78 to 45.93 (BENCHMARKS.md, run 75).
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
import triton
import triton.language as tl

from flashsight.engine.kernels.activation import silu_and_mul, silu_mul
from flashsight.engine.kernels.linear import linear

SHAPES = {  # name: (rows, n, inner): x [rows, inner] @ gate_up[2n, inner].T, gated to [rows, n]
    "text": (7000, 13696, 4096),
    "text, one prompt": (1500, 13696, 4096),
    "vision": (27380, 4096, 1536),
    "vision, one image": (5476, 4096, 1536),
}


@triton.jit
def _tile_of(tile, M, N, BM: tl.constexpr, BN: tl.constexpr, GROUP_M: tl.constexpr):
    """Row blocks in groups of GROUP_M, column-major inside a group: tiles taken at about the
    same time share their weight columns and input rows in L2."""
    num_m, num_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    in_group = GROUP_M * num_n
    first_m = tile // in_group * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    return first_m + (tile % in_group) % size_m, (tile % in_group) // size_m


@triton.jit
def _gated_persistent(x_desc, w_desc, out_desc, M, N, K, programs,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):  # fmt: skip
    """One program a multiprocessor, taking tiles in turn through TMA descriptors."""
    tiles = tl.cdiv(M, BM) * tl.cdiv(N, BN)
    for tile in tl.range(tl.program_id(0), tiles, programs, flatten=True):
        pid_m, pid_n = _tile_of(tile, M, N, BM, BN, GROUP_M)
        _gated_tile(x_desc, w_desc, out_desc, pid_m * BM, pid_n * BN, N, K, BM, BN, BK)


@triton.jit
def _gated_tile(x_desc, w_desc, out_desc, off_m, off_n, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """One output tile: the gate and up tiles of the same columns from one load of the input."""
    gate = tl.zeros((BM, BN), tl.float32)
    up = tl.zeros((BM, BN), tl.float32)
    for k in range(0, K, BK):
        x = x_desc.load([off_m, k])
        gate = tl.dot(x, w_desc.load([off_n, k]).T, gate)
        up = tl.dot(x, w_desc.load([N + off_n, k]).T, up)
    dtype = out_desc.dtype  # rounded to the model's dtype first, as the reference's product output is
    out_desc.store([off_m, off_n], silu_mul(gate.to(dtype), up.to(dtype)))


@triton.jit
def _gated_pointers(x_ptr, w_ptr, out_ptr, M, N, K, stride_x, stride_w, stride_out,
                    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):  # fmt: skip
    pid_m, pid_n = _tile_of(tl.program_id(0), M, N, BM, BN, GROUP_M)
    rows = pid_m * BM + tl.arange(0, BM)
    cols = pid_n * BN + tl.arange(0, BN)
    inner = tl.arange(0, BK)
    x_ptrs = x_ptr + rows[:, None].to(tl.int64) * stride_x + inner[None, :]
    g_ptrs = w_ptr + cols[None, :].to(tl.int64) * stride_w + inner[:, None]
    u_ptrs = g_ptrs + N * stride_w
    row_ok = rows[:, None] < M
    acc_g = tl.zeros((BM, BN), tl.float32)
    acc_u = tl.zeros((BM, BN), tl.float32)
    for _ in range(0, K, BK):
        a = tl.load(x_ptrs, mask=row_ok, other=0.0)
        acc_g = tl.dot(a, tl.load(g_ptrs), acc_g)
        acc_u = tl.dot(a, tl.load(u_ptrs), acc_u)
        x_ptrs += BK
        g_ptrs += BK
        u_ptrs += BK
    gated = silu_mul(acc_g.to(out_ptr.dtype.element_ty), acc_u.to(out_ptr.dtype.element_ty))
    tl.store(out_ptr + rows[:, None].to(tl.int64) * stride_out + cols[None, :], gated, mask=row_ok)


@triton.jit
def _gated_descriptors(x_desc, w_desc, out_desc, M, N, K,
                       BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):  # fmt: skip
    pid_m, pid_n = _tile_of(tl.program_id(0), M, N, BM, BN, GROUP_M)
    _gated_tile(x_desc, w_desc, out_desc, pid_m * BM, pid_n * BN, N, K, BM, BN, BK)


def gated(x: torch.Tensor, gate_up: torch.Tensor, config: tuple, variant: str) -> torch.Tensor:
    bm, bn, bk, warps, stages, group = config
    rows, inner = x.shape
    n = gate_up.shape[0] // 2
    out = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    tiles = triton.cdiv(rows, bm) * triton.cdiv(n, bn)
    if variant != "ptr":
        from triton.tools.tensor_descriptor import TensorDescriptor

        descriptors = (TensorDescriptor.from_tensor(x, [bm, bk]), TensorDescriptor.from_tensor(gate_up, [bn, bk]),
                       TensorDescriptor.from_tensor(out, [bm, bn]))  # fmt: skip
        if variant == "tma":
            _gated_descriptors[(tiles,)](*descriptors, rows, n, inner, BM=bm, BN=bn, BK=bk, GROUP_M=group,
                                         num_warps=warps, num_stages=stages)  # fmt: skip
        else:
            processors = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 3
            programs = min(tiles, processors)
            _gated_persistent[(programs,)](*descriptors, rows, n, inner, programs, BM=bm, BN=bn, BK=bk,
                                           GROUP_M=group, num_warps=warps, num_stages=stages)  # fmt: skip
    else:
        _gated_pointers[(tiles,)](
            x, gate_up, out, rows, n, inner, x.stride(0), gate_up.stride(0), out.stride(0),
            BM=bm, BN=bn, BK=bk, GROUP_M=group, num_warps=warps, num_stages=stages,
        )  # fmt: skip
    return out


VARIANTS = ("ptr", "tma", "persistent")  # pointer loads; TMA descriptors; TMA, one program a multiprocessor


def configs(quick: bool) -> list[tuple]:
    if quick:
        return [(128, 128, 64, 8, 3, 8), (128, 64, 64, 4, 4, 8)]
    shapes = [(128, 128, 64, 8), (128, 64, 64, 4), (128, 64, 64, 8), (64, 128, 64, 4), (256, 64, 64, 8)]
    return [(*s, stages, 8) for s, stages in itertools.product(shapes, (3, 4))]


def sustained_ms(fn, seconds: float) -> float:
    """Median ms of one call over `seconds` of back-to-back calls, in windows of 20."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(20):
            fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 20)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--quick", action="store_true", help="two tile shapes, not the sweep")
    args = parser.parse_args()
    for name in args.shapes:
        rows, n, inner = SHAPES[name]
        x = torch.randn(rows, inner, device="cuda", dtype=torch.bfloat16)
        gate_up = torch.randn(2 * n, inner, device="cuda", dtype=torch.bfloat16) / inner**0.5
        flops = 2 * rows * inner * 2 * n
        expected = silu_and_mul(linear(x, gate_up))
        candidates = {"cuBLAS product alone": lambda: linear(x, gate_up),
                      "cuBLAS + SwiGLU kernel (the engine)": lambda: silu_and_mul(linear(x, gate_up))}  # fmt: skip
        for config, variant in itertools.product(configs(args.quick), VARIANTS):
            fn = (lambda c=config, v=variant: gated(x, gate_up, c, v))
            try:
                got = fn()
            except Exception as exc:  # a tile that does not fit this GPU's shared memory, an old Triton
                print(f"  {name}: {variant} {config} failed: {type(exc).__name__}: {str(exc)[:120]}")
                continue
            error = ((got.float() - expected.float()).norm() / expected.float().norm()).item()
            if not error < 1e-2:
                print(f"  {name}: {variant} {config} wrong: relative error {error:.2e}")
                continue
            candidates[f"fused {variant} {config}"] = fn
        quick = {label: sustained_ms(fn, 0.3) for label, fn in candidates.items()}
        best = sorted((ms, label) for label, ms in quick.items() if label.startswith("fused"))[:3]
        chosen = ["cuBLAS product alone", "cuBLAS + SwiGLU kernel (the engine)"] + [label for _, label in best]
        print(f"{name}: {rows} x {inner} @ {2 * n}, sustained {args.seconds:.0f} s each, twice, alternated:")
        results = {label: [] for label in chosen}
        for _ in range(2):
            for label in chosen:
                results[label].append(sustained_ms(candidates[label], args.seconds))
        for label in chosen:
            ms = min(results[label])
            print(f"  {label:60s} {ms:7.3f} ms {flops / ms / 1e9:5.0f} TFLOP/s  ({', '.join(f'{t:.3f}' for t in results[label])})")


if __name__ == "__main__":
    main()
