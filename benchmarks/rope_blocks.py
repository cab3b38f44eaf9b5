"""Time the text rotary kernel at decode and prompt step sizes, against an older rope.py (GPU
only), and check both against the reference rotation.

    python benchmarks/rope_blocks.py [--old PATH/TO/rope.py]

q and k are views of one fused q/k/v projection, as in the model (32 query and 2 key heads of
128 channels, the first 64 rotated), in bf16. Every time is a CUDA-graph replay; the bandwidth
counts the rotated channels read and written.
"""

from __future__ import annotations

import argparse
import importlib.util

import torch
from triton.testing import do_bench_cudagraph

from flashsight.engine.kernels import rope
from flashsight.engine.kernels.ops import TorchOps

Q_HEADS, K_HEADS, DIM, ROTARY = 32, 2, 128, 64


def inputs(tokens: int):
    qkv = torch.randn(tokens, (Q_HEADS + 2 * K_HEADS) * DIM, device="cuda", dtype=torch.bfloat16)
    q = qkv[:, : Q_HEADS * DIM].view(tokens, Q_HEADS, DIM)
    k = qkv[:, Q_HEADS * DIM : (Q_HEADS + K_HEADS) * DIM].view(tokens, K_HEADS, DIM)
    angles = torch.randn(tokens, ROTARY // 2, device="cuda") * 100
    cos = angles.cos().repeat_interleave(2, -1).to(torch.bfloat16)
    sin = angles.sin().repeat_interleave(2, -1).to(torch.bfloat16)
    return q, k, cos, sin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", help="an older rope.py, timed beside this one")
    args = parser.parse_args()
    kernels = {"new": rope}
    if args.old:
        spec = importlib.util.spec_from_file_location("old_rope", args.old)
        kernels["old"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(kernels["old"])
    torch.manual_seed(0)
    for tokens in (1, 16, 112, 1394, 8192):
        q, k, cos, sin = inputs(tokens)
        want_q, want_k = TorchOps.apply_rope(q, k, cos, sin)
        moved = 2 * tokens * (Q_HEADS + K_HEADS) * ROTARY * 2
        differ = {}
        for name, module in kernels.items():  # every check before any timing: timing rotates q and k in place
            got_q, got_k = q.clone(), k.clone()
            module.apply_rope_(got_q, got_k, cos, sin)
            differ[name] = int((got_q != want_q).sum() + (got_k != want_k).sum())
        line = []
        for name, module in kernels.items():
            us = do_bench_cudagraph(lambda module=module: module.apply_rope_(q, k, cos, sin), rep=20) * 1e3
            line.append(f"{name} {us:6.1f} us ({moved / us / 1e6:4.2f} TB/s, {differ[name]} values differ from the reference)")
        print(f"{tokens:5d} tokens: " + "; ".join(line))


if __name__ == "__main__":
    main()
