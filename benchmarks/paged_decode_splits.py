"""Time the paged decode attention kernel's launch shapes on the loaded workloads' decode steps
(GPU only): how many context splits, key tile rows and warps per program.

    python benchmarks/paged_decode_splits.py [--batch 70 100 --context 1450] [--pages scattered in-order]

One text layer: 32 query heads over 2 KV heads of 128, bf16, 16-token pages scattered over a
large cache (or in order, each sequence's pages side by side, as a fresh server hands them out),
every sequence at the same context. Timed as CUDA-graph replays, as decode steps
run (the launches' CPU cost would hide small batches' kernel time). Prints us per launch (the
merge included) and the rate at which it reads the keys and values, against ~4.3 TB/s for a
device copy (KINDS.md).
"""

from __future__ import annotations

import argparse
import itertools

import torch
from triton.testing import do_bench_cudagraph

from flashsight.engine.kernels.paged_decode import paged_decode_attention, splits_for, tile_for

HEADS, KV_HEADS, DIM, PAGE = 32, 2, 128, 16


def case(batch: int, context: int, layout: str) -> None:
    pages = -(-context // PAGE)
    slots = (batch * pages + 64) * PAGE
    k_cache = torch.randn(slots, KV_HEADS, DIM, device="cuda", dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    order = torch.randperm if layout == "scattered" else torch.arange
    tables = order(batch * pages + 64, device="cuda")[: batch * pages].view(batch, pages).to(torch.int32)
    lens = torch.full((batch,), context, device="cuda", dtype=torch.int32)
    q = torch.randn(batch, HEADS, DIM, device="cuda", dtype=torch.bfloat16)
    gigabytes = 2 * batch * context * KV_HEADS * DIM * 2 / 1e9
    ours = splits_for(batch * KV_HEADS, q.device)
    our_tile = tile_for(batch * KV_HEADS * ours, ours, q.device)
    rows = []
    for splits, tile, warps in itertools.product((1, 2, 4, 8, 16, 32), (32, 64, 128), (4, 8)):
        if splits * tile > 2 * context and splits > 1:
            continue
        us = 1000 * do_bench_cudagraph(lambda: paged_decode_attention(q, k_cache, v_cache, tables, lens, PAGE, splits, tile, warps))
        rows.append((us, splits, tile, warps))
    rows.sort()
    default = next(r for r in rows if r[1:] == (ours, our_tile, 4))
    print(f"batch {batch}, context {context}, pages {layout}: ours (splits {ours}, tile {our_tile}, 4 warps) {default[0]:.1f} us, "
          f"{gigabytes / default[0] * 1e6:.0f} GB/s; best:")  # fmt: skip
    for us, splits, tile, warps in rows[:4]:
        print(f"  splits {splits:2d}, tile {tile:3d}, {warps} warps: {us:.1f} us, {gigabytes / us * 1e6:.0f} GB/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, nargs="+", help="these batch sizes at --context (default: the table's cases)")
    parser.add_argument("--context", type=int, default=1450)
    parser.add_argument("--pages", nargs="+", choices=("scattered", "in-order"), default=["scattered"])
    args = parser.parse_args()
    cases = [(batch, args.context) for batch in args.batch] if args.batch else [
        (1, 1450), (4, 1450), (16, 1450), (32, 1450), (64, 1450), (100, 1450), (128, 1450), (100, 450), (256, 1450),
        (256, 450)]  # fmt: skip
    for batch, context in cases:
        for layout in args.pages:
            case(batch, context, layout)


if __name__ == "__main__":
    main()
