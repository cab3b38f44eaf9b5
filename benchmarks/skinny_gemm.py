"""Time the text decoder's products at decode batch sizes: cuBLAS (F.linear, with cuBLAS and with
cuBLASLt preferred) against the split-K kernel's launch plans (GPU only).

    python benchmarks/skinny_gemm.py [--rows 1 32 64 112] [--top 4] [--no-plans] [--prefill]
                                     [--layer-rows 1280 2048 8192]

Every time is a CUDA-graph replay (decode steps run as graphs), on GLM-4.6V-Flash's shapes in
bf16. Prints microseconds and the weights' read bandwidth per plan, best first, and each plan's
error against cuBLAS relative to the output's largest magnitude. --no-plans times the two cuBLAS
back ends alone; --prefill also compares them on prompt-sized products of the text decoder and
the vision tower (in TFLOP/s). --layer-rows times one text layer's four products as the engine
computes them (`kernels.linear`) at prompt-sized row counts: what a step's chunk size costs.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench_cudagraph

from flashsight.engine.kernels.linear import linear
from flashsight.engine.kernels.skinny_matmul import SkinnyPlan, skinny_linear

SHAPES = {  # name: (output columns, inner dimension, bias)
    "qkv": (4608, 4096, True),
    "o": (4096, 4096, False),
    "gate_up": (27392, 4096, False),
    "down": (4096, 13696, False),
}
TILES = [(64, 128, 4), (64, 256, 3), (128, 128, 3), (128, 128, 4), (128, 256, 2), (64, 64, 6), (128, 64, 5)]
SPLITS = (1, 2, 4, 8)
PREFILL = {  # name: (rows, output columns, inner dimension)
    "text qkv": (8192, 4608, 4096), "text o": (8192, 4096, 4096), "text gate_up": (8192, 27392, 4096),
    "text down": (8192, 4096, 13696), "text gate_up, 2048 rows": (2048, 27392, 4096),
    "vision qkv": (27380, 4608, 1536), "vision proj": (27380, 1536, 1536), "vision gate_up": (27380, 8192, 1536),
    "vision down": (27380, 1536, 4096), "vision gate_up, one image": (5476, 8192, 1536),
}


def timed(fn) -> float:
    return do_bench_cudagraph(fn, rep=30) * 1e3  # us


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="*", default=[1, 32, 64, 112])
    parser.add_argument("--top", type=int, default=4)
    parser.add_argument("--no-plans", action="store_true")
    parser.add_argument("--prefill", action="store_true")
    parser.add_argument("--layer-rows", type=int, nargs="*", default=[])
    args = parser.parse_args()
    if args.prefill:
        prefill()
    if args.layer_rows:
        layer_products(args.layer_rows)
    torch.manual_seed(0)
    totals: dict[tuple[int, str], float] = {}
    for name, (n, k, has_bias) in SHAPES.items():
        weight = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        bias = torch.randn(n, device="cuda", dtype=torch.bfloat16) if has_bias else None
        gbytes = weight.numel() * 2 / 1e9
        for rows in args.rows:
            x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
            want = F.linear(x, weight, bias).float()
            results = []
            for library in ("default", "cublas", "cublaslt"):
                torch.backends.cuda.preferred_blas_library(library)
                us = timed(lambda: F.linear(x, weight, bias))
                totals[(rows, library)] = totals.get((rows, library), 0.0) + us
                if library != "default":
                    results.append((us, library, 0.0))
            torch.backends.cuda.preferred_blas_library("default")
            for block_n, block_k, stages in [] if args.no_plans else TILES:
                for splits in SPLITS:
                    plan = SkinnyPlan(block_n, block_k, splits, 4, stages)
                    try:
                        got = skinny_linear(x, weight, bias, plan).float()
                        us = timed(lambda plan=plan: skinny_linear(x, weight, bias, plan))
                    except triton.runtime.errors.OutOfResources:  # too large for shared memory
                        continue
                    error = ((got - want).abs().max() / want.abs().max()).item()
                    results.append((us, str(tuple(plan)), error))
            results.sort()
            cublas = min(us for us, label, _ in results if label.startswith("cublas"))
            totals[(rows, "best")] = totals.get((rows, "best"), 0.0) + results[0][0]
            print(f"{name} [{rows} x {k}] x [{k} x {n}] ({gbytes * 1e3:.1f} MB): cuBLAS best {cublas:.1f} us"
                  f" ({gbytes / cublas * 1e3:.2f} TB/s)")  # fmt: skip
            for us, label, error in results[: args.top]:
                print(f"  {label:28s} {us:7.1f} us  {gbytes / us * 1e3:.2f} TB/s  rel err {error:.1e}")
    for rows in args.rows:
        default, best = totals[(rows, "default")], totals[(rows, "best")]
        print(f"{rows} rows, one layer's four products: PyTorch's default {default:.1f} us, cuBLAS "
              f"{totals[(rows, 'cublas')]:.1f}, cuBLASLt {totals[(rows, 'cublaslt')]:.1f}, best of all {best:.1f} us; "
              f"x 40 layers: {40 * (default - best) / 1e3:.2f} ms saved")  # fmt: skip


def prefill() -> None:
    for name, (rows, n, k) in PREFILL.items():
        x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        weight = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        line = []
        for library in ("cublas", "cublaslt"):
            torch.backends.cuda.preferred_blas_library(library)
            us = timed(lambda: F.linear(x, weight))
            line.append(f"{library} {us:8.1f} us ({2 * rows * n * k / us / 1e6:.0f} TFLOP/s)")
        torch.backends.cuda.preferred_blas_library("default")
        print(f"{name:28s} [{rows} x {k}] x [{k} x {n}]: " + ", ".join(line))


def layer_products(row_counts: list[int]) -> None:
    weights = {name: torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for name, (n, k, _) in SHAPES.items()}
    for rows in row_counts:
        times = {}
        for name, weight in weights.items():
            x = torch.randn(rows, weight.shape[1], device="cuda", dtype=torch.bfloat16)
            times[name] = timed(lambda: linear(x, weight))
        flops = {name: 2 * rows * weight.numel() for name, weight in weights.items()}
        total = sum(times.values())
        parts = ", ".join(f"{name} {us:.0f} us ({flops[name] / us / 1e6:.0f})" for name, us in times.items())
        print(f"{rows} rows, one layer's products: {total:.0f} us, {sum(flops.values()) / total / 1e6:.0f} TFLOP/s; {parts}")


if __name__ == "__main__":
    main()
