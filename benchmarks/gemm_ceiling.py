"""The GPU's sustained matrix rate: bf16 products run back to back for seconds, as a loaded W1
level runs them, timed second by second, with the SM clock and power read beside (GPU only).

    python benchmarks/gemm_ceiling.py [--seconds 12]

A product timed for a few milliseconds runs at the boost clock; a level that keeps the tensor
cores busy for 20 s runs at whatever clock the power limit allows. The shapes: a large square
product, and a loaded W1 mixed step's largest (the text decoder's gate/up and down projections at
~7000 prompt rows, the vision tower's gate/up at five images' 27,380 patches).
"""

from __future__ import annotations

import argparse
import subprocess
import time

import torch

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


def sustained(rows: int, n: int, k: int, seconds: float) -> list[tuple[float, str]]:
    """TFLOP/s in each second of `seconds` of back-to-back products, and the clocks at its end."""
    x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
    out = torch.empty(rows, n, device="cuda", dtype=torch.bfloat16)
    flops = 2 * rows * n * k
    for _ in range(3):
        torch.matmul(x, weight.t(), out=out)  # x @ W.T, as F.linear computes the engine's products
    torch.cuda.synchronize()
    windows, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        count, began = 0, time.monotonic()
        start_event.record()
        while time.monotonic() - began < 1.0:
            for _ in range(10):
                torch.matmul(x, weight.t(), out=out)
            count += 10
            torch.cuda.synchronize()  # the host clock above follows the GPU
        end_event.record()
        torch.cuda.synchronize()
        windows.append((count * flops / (start_event.elapsed_time(end_event) / 1e3) / 1e12, clocks()))
    return windows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}; idle: {clocks()} (SM MHz, W, C)")
    for name, (rows, n, k) in SHAPES.items():
        windows = sustained(rows, n, k, args.seconds)
        rates = [rate for rate, _ in windows]
        print(f"{name} [{rows} x {k}] x [{k} x {n}]: first second {rates[0]:.0f} TFLOP/s, last {rates[-1]:.0f}, "
              f"best {max(rates):.0f}; at the end: {windows[-1][1]}")  # fmt: skip


if __name__ == "__main__":
    main()
