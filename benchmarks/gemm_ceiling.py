"""The GPU's sustained matrix rate: bf16 products run back to back for seconds, as a loaded W1
level runs them, timed second by second, with the SM clock and power read beside (GPU only).

    python benchmarks/gemm_ceiling.py [--seconds 12] [--rows 7300]

A product timed for a few milliseconds runs at the boost clock; a level that keeps the tensor
cores busy for 20 s runs at whatever clock the power limit allows. The shapes: a large square
product, and a loaded W1 mixed step's largest (the text decoder's gate/up and down projections at
~7000 prompt rows, the vision tower's gate/up at five images' 27,380 patches). Each runs as
`torch.matmul` and as the engine's own `kernels.linear` (its cuBLAS library by shape), and the
kernel each picked is named: a loaded W1 level's profile had these products at 575-623 TFLOP/s.
"""

from __future__ import annotations

import argparse
import subprocess
import time

import torch
import torch.profiler as tp

from flashsight.engine.kernels.linear import linear

SHAPES = {  # name: (rows, output columns, inner dimension)
    "square 8192": (8192, 8192, 8192),
    "text gate/up, 7000 rows": (7000, 27392, 4096),
    "text down, 7000 rows": (7000, 4096, 13696),
    "vision gate/up, 27380 rows": (27380, 8192, 1536),
}


def clocks() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,power.draw,temperature.gpu", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=5).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "-"


def kernel_name(product) -> str:
    with tp.profile(activities=[tp.ProfilerActivity.CUDA]) as prof:
        product()
        torch.cuda.synchronize()
    names = [e.key for e in prof.key_averages() if e.device_time_total > 0]
    return names[0][:60] if names else "-"


def sustained(product, flops: int, seconds: float) -> list[tuple[float, str]]:
    """TFLOP/s in each second of `seconds` of back-to-back products, and the clocks at its end."""
    for _ in range(3):
        product()
    torch.cuda.synchronize()
    windows, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        count, began = 0, time.monotonic()
        start_event.record()
        while time.monotonic() - began < 1.0:
            for _ in range(10):
                product()
            count += 10
            torch.cuda.synchronize()  # the host clock above follows the GPU
        end_event.record()
        torch.cuda.synchronize()
        windows.append((count * flops / (start_event.elapsed_time(end_event) / 1e3) / 1e12, clocks()))
    return windows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--rows", type=int, help="the text products at this many rows instead of 7000")
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}; idle: {clocks()} (SM MHz, W, C)")
    for name, (rows, n, k) in SHAPES.items():
        if args.rows and name.startswith("text"):
            name, rows = name.replace("7000", str(args.rows)), args.rows
        x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        weight = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        out = torch.empty(rows, n, device="cuda", dtype=torch.bfloat16)
        ways = {"matmul": lambda: torch.matmul(x, weight.t(), out=out), "engine's linear": lambda: linear(x, weight)}
        for way, product in ways.items():
            windows = sustained(product, 2 * rows * n * k, args.seconds)
            rates = [rate for rate, _ in windows]
            print(f"{name} [{rows} x {k}] x [{k} x {n}], {way} ({kernel_name(product)}): first second {rates[0]:.0f} "
                  f"TFLOP/s, last {rates[-1]:.0f}, best {max(rates):.0f}; at the end: {windows[-1][1]}")  # fmt: skip


if __name__ == "__main__":
    main()
