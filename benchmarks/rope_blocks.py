"""Time the text rotary kernel, which also writes the step's keys and values to the cache, at
decode and prompt step sizes, against an older rope.py's rotation followed by the two cache copies
the engine made before (GPU only); check both against the reference ops.

    python benchmarks/rope_blocks.py [--old PATH/TO/rope.py]

q, k and v are views of one fused q/k/v projection, as in the model (32 query and 2 key heads of
128 channels, the first 64 rotated), in bf16. Every time is a CUDA-graph replay; the bandwidth
counts q and k's rotated channels read and written and k and v written to the cache.
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
    q, k, v = qkv.split([Q_HEADS * DIM, K_HEADS * DIM, K_HEADS * DIM], dim=-1)
    angles = torch.randn(tokens, ROTARY // 2, device="cuda") * 100
    cos = angles.cos().repeat_interleave(2, -1).to(torch.bfloat16)
    sin = angles.sin().repeat_interleave(2, -1).to(torch.bfloat16)
    slots = torch.randperm(4 * tokens, device="cuda")[:tokens]
    return q.view(tokens, Q_HEADS, DIM), k.view(tokens, K_HEADS, DIM), v.view(tokens, K_HEADS, DIM), cos, sin, slots


def rounded_once(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotation computed in float32 and rounded once at the end (the reference rounds each
    product and the sum): which of the two a kernel matches says how it rounds."""
    rot = x[..., :ROTARY].float()
    pairs = torch.stack((-rot[..., 1::2], rot[..., 0::2]), dim=-1).flatten(-2)
    out = x.clone()
    out[..., :ROTARY] = (rot * cos[:, None].float() + pairs * sin[:, None].float()).to(x.dtype)
    return out


def old_way(module):
    def run(q, k, v, cos, sin, keys, values, slots):
        module.apply_rope_(q, k, cos, sin)
        keys.index_copy_(0, slots, k)
        values.index_copy_(0, slots, v)

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", help="an older rope.py (with apply_rope_), timed beside this one")
    args = parser.parse_args()
    kernels = {"new": rope.apply_rope_and_store_}
    if args.old:
        spec = importlib.util.spec_from_file_location("old_rope", args.old)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        kernels["old"] = old_way(module)
    torch.manual_seed(0)
    for tokens in (1, 16, 112, 1394, 8192):
        q, k, v, cos, sin, slots = inputs(tokens)
        caches = [torch.zeros(4 * tokens, K_HEADS, DIM, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
        want = [*TorchOps.rope_and_store(q.clone(), k.clone(), v, cos, sin, *caches, slots), *caches]
        moved = 2 * tokens * (Q_HEADS + K_HEADS) * ROTARY * 2 + 2 * tokens * K_HEADS * DIM * 2
        differ = {}
        for name, fn in kernels.items():  # every check before any timing: timing rotates q and k in place
            got = [q.clone(), k.clone(), torch.zeros_like(caches[0]), torch.zeros_like(caches[1])]
            fn(got[0], got[1], v, cos, sin, got[2], got[3], slots)
            differ[name] = [int((a != b).sum()) for a, b in zip(got, want)]
            differ[name].append(int((got[0] != rounded_once(q, cos, sin)).sum()))
        line = []
        for name, fn in kernels.items():
            keys, values = torch.zeros_like(caches[0]), torch.zeros_like(caches[1])
            us = do_bench_cudagraph(lambda fn=fn: fn(q, k, v, cos, sin, keys, values, slots), rep=20) * 1e3
            line.append(f"{name} {us:6.1f} us ({moved / us / 1e6:4.2f} TB/s; values unlike the reference in "
                        f"q/k/key cache/value cache, q against one rounding: {differ[name]})")  # fmt: skip
        print(f"{tokens:5d} tokens: " + "; ".join(line))


if __name__ == "__main__":
    main()
