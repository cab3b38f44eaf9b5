"""The text decoder's products at a range of row counts, through the engine's own `linear`: how
a step's size sets their rate (GPU only).

    python benchmarks/product_rows.py [--rows 96 100 128 1024 1119 1408 2048 8192] [--tunable]

A loaded W1 step at the default budget holds ~5.5 prompts (~7,800 rows), where the products run
at the sustained ceiling; a step of one chunk (~1,000-1,500 rows) may fill the multiprocessors in
fewer, emptier waves of tiles, and that would be a fixed cost of small steps that chunked prefill
pays at every step. Each product is timed over ~0.2 s after a warm-up, so the rate is the boost
clock's, a few percent above a loaded level's; compare rows with rows. Eager launches set the pace
of products of a few hundred rows or fewer (run 85 timed 96-128 rows at the launches' speed):
decode sizes are skinny_gemm.py's, timed as CUDA-graph replays as the decode step runs them.
--tunable times each again with PyTorch's TunableOp choosing the product's algorithm by timing.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from flashsight.engine.kernels.linear import linear

SHAPES = {  # name: (output columns, inner dimension) of GLM-4.6V-Flash's text decoder
    "q/k/v": (4608, 4096),
    "o": (4096, 4096),
    "gate/up": (27392, 4096),
    "down": (4096, 13696),
}


def product_ms(x: torch.Tensor, weight: torch.Tensor) -> float:
    for _ in range(3):
        linear(x, weight)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    linear(x, weight)
    end.record()
    end.synchronize()
    repeats = max(3, int(200 / max(start.elapsed_time(end), 1e-3)))
    start.record()
    for _ in range(repeats):
        linear(x, weight)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+",
                        default=[1024, 1119, 1280, 1408, 1536, 2048, 2816, 4096, 8192])  # fmt: skip
    parser.add_argument("--tunable", action="store_true", help="then again with TunableOp's choices")
    args = parser.parse_args()
    table(args.rows)
    if args.tunable:
        tunable_on()
        print("TunableOp:")
        table(args.rows)
        print("\n".join(tuned_choices()))


def tunable_on(max_ms: int = 30) -> None:
    """PyTorch's TunableOp on, timing each new product shape's candidates (up to max_ms each;
    cuBLASLt's heuristic ones where this PyTorch offers them). Its table goes to a temporary file."""
    tunable = torch.cuda.tunable
    tunable.set_filename(tempfile.mkstemp(prefix="tunableop-", suffix=".csv")[1])
    if hasattr(tunable, "set_cublaslt_requested_algo_count"):
        tunable.set_cublaslt_requested_algo_count(24)
    tunable.set_max_tuning_duration(max_ms)
    tunable.enable(True)
    tunable.tuning_enable(True)


def tuned_choices() -> list[str]:
    """What TunableOp chose, a line per product shape."""
    return sorted({f"  {op} {params}: {solution} ({float(us or 0):.1f} us)"
                   for op, params, solution, us in torch.cuda.tunable.get_results()})  # fmt: skip


def table(row_counts: list[int]) -> None:
    weights = {name: torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for name, (n, k) in SHAPES.items()}
    print(f"{torch.cuda.get_device_name()}: ms a product (TFLOP/s)")
    print("rows | " + " | ".join(SHAPES) + " | a layer's four, us a row")
    for rows in row_counts:
        cells, total = [], 0.0
        for name, (n, k) in SHAPES.items():
            x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
            ms = product_ms(x, weights[name])
            total += ms
            cells.append(f"{ms:.4f} ({2 * rows * n * k / ms / 1e9:.0f})")
        print(f"{rows} | " + " | ".join(cells) + f" | {total / rows * 1e3:.3f}")


if __name__ == "__main__":
    main()
