"""Time the text prefill attention kernel's tile shapes on W1's prompt shapes (GPU only).

    python benchmarks/prefill_tiles.py [--old PATH/TO/prefill_attention.py] [--defaults-only]

Tiles: `candidates()`. Shapes: one 1394-token prompt, five of them in one launch, and a 694-token chunk after 700
cached tokens; 32 query heads over 2 KV heads of 128 channels, bf16 (GLM-4.6V-Flash's text
attention). Prints ms and TFLOP/s per (BLOCK_M, BLOCK_N, warps, stages), an older kernel's
default for comparison, and SDPA on the whole-prompt shapes (equal-length prompts batched, GQA
without expanding the KV heads) held to cuDNN's kernel and to FlashAttention's. Run 44 (H200):
cuDNN 135 us for one prompt against the Triton kernel's 53, 203 us against 237 for five side by
side; in the engine the route lost 0.5 s of W1 c100's mixed steps, so prompts stay in Triton.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from flashsight.engine.kernels.prefill_attention import TILES, varlen_attention, varlen_attention_reference
from flashsight.engine.kernels.varlen_spans import VarlenSpans, same_length_runs

HEADS, KV_HEADS, DIM = 32, 2, 128


def case(q_lens: list[int], k_lens: list[int]):
    q_starts = [sum(q_lens[:i]) for i in range(len(q_lens))]
    k_starts = [sum(k_lens[:i]) for i in range(len(k_lens))]
    spans = VarlenSpans(q_starts, q_lens, k_starts, k_lens)
    if q_lens == k_lens:  # as in the model: strided views of one q/k/v projection
        qkv = torch.randn(sum(q_lens), (HEADS + 2 * KV_HEADS) * DIM, device="cuda", dtype=torch.bfloat16)
        q, k, v = qkv.split([HEADS * DIM, KV_HEADS * DIM, KV_HEADS * DIM], dim=-1)
        q, k, v = q.unflatten(-1, (HEADS, DIM)), k.unflatten(-1, (KV_HEADS, DIM)), v.unflatten(-1, (KV_HEADS, DIM))
    else:
        q = torch.randn(sum(q_lens), HEADS, DIM, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(sum(k_lens), KV_HEADS, DIM, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
    visible = sum(sum(min(kl, kl - ql + r + 1) for r in range(ql)) for ql, kl in zip(q_lens, k_lens))
    return spans, q, k, v, 4 * visible * DIM * HEADS


def sdpa_whole_prompts(q, k, v, spans: VarlenSpans, backend: str) -> torch.Tensor:
    """Whole prompts through SDPA held to one kernel ("CUDNN_ATTENTION", "FLASH_ATTENTION"),
    a call per run of equal lengths, the KV heads grouped (not expanded). Raises where the
    kernel cannot run these inputs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = torch.empty_like(q)
    with sdpa_kernel([getattr(SDPBackend, backend)]):
        for start, count, length in same_length_runs(spans.q_starts, spans.q_lens):
            rows = slice(start, start + count * length)
            batch = [t[rows].view(count, length, *t.shape[1:]).transpose(1, 2) for t in (q, k, v)]
            got = F.scaled_dot_product_attention(*batch, is_causal=True, enable_gqa=True)
            out[rows].view(count, length, *q.shape[1:]).copy_(got.transpose(1, 2))
    return out


def candidates() -> list[tuple[int, ...]]:
    """(tokens per block, BLOCK_N, warps, stages, query heads per block): one head per block as
    before, and blocks of 4, 8 or 16 heads of one KV head at 64 rows (4 warps) or 128 (8 warps)."""
    one_head = [(64, 64, 4, 2, 1), (64, 64, 4, 3, 1), (64, 128, 4, 2, 1), (128, 64, 8, 2, 1), (128, 64, 8, 3, 1)]
    packed = [(rows // heads, n, rows // 16, s, heads) for heads, rows, n, s in
              itertools.product((4, 8, 16), (64, 128), (32, 64, 128), (2, 3))]  # fmt: skip
    return one_head + packed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", help="an older prefill_attention.py, timed at its own defaults")
    parser.add_argument("--defaults-only", action="store_true", help="time the default tiles alone, not every candidate")
    parser.add_argument("--json", help="also write every case's timings here, and the tiles fastest over all cases")
    args = parser.parse_args()
    old = None
    if args.old:
        spec = importlib.util.spec_from_file_location("old_prefill_attention", args.old)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    cases = {"one prompt": ([1394], [1394]), "five prompts": ([1394] * 5, [1394] * 5), "chunk after 700": ([694], [1394])}
    torch.manual_seed(0)
    timings: dict[str, dict[str, float]] = {}
    for name, (q_lens, k_lens) in cases.items():
        spans, q, k, v, flops = case(q_lens, k_lens)
        want = varlen_attention_reference(q, k, v, spans, causal=True)
        rows = []

        def timed(label, fn):
            try:
                got = fn()
                error = (got.float() - want.float()).abs().max().item() if got is not None else float("nan")
                ms = do_bench(fn, warmup=10, rep=50)
            except Exception as exc:  # a tile shape that does not fit in shared memory
                print(f"  {label}: failed ({type(exc).__name__})")
                return
            rows.append((ms, label, error))

        if old is not None:
            timed("old kernel", lambda: old.varlen_attention(q, k, v, spans, True))
        if q_lens == k_lens:  # whole prompts: the shapes the engine sends to SDPA
            for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION"):
                timed(f"SDPA held to {backend}", lambda backend=backend: sdpa_whole_prompts(q, k, v, spans, backend))
        for tiles in [TILES] if args.defaults_only else candidates():
            timed(f"tiles {tiles}", lambda tiles=tiles: varlen_attention(q, k, v, spans, True, tiles=tiles))
        timings[name] = {label: ms for ms, label, _ in rows}
        print(f"{name}: {flops / 1e9:.0f} GFLOP")
        for ms, label, error in sorted(rows)[:12]:
            print(f"  {ms * 1e3:8.1f} us  {flops / ms / 1e9:6.0f} TFLOP/s  max err {error:.1e}  {label}")
        for ms, label, error in rows:
            if label == "old kernel" or label == f"tiles {TILES}" or label.startswith("SDPA"):
                print(f"  {ms * 1e3:8.1f} us  {flops / ms / 1e9:6.0f} TFLOP/s  max err {error:.1e}  {label}"
                      + (" (default)" if label.startswith("tiles") else ""))  # fmt: skip
    if args.json:
        write_json(args.json, timings)


def write_json(path: str, timings: dict[str, dict[str, float]]) -> None:
    """Every case's ms by label, and the tiles whose summed time over the cases is least (a
    shape that failed in any case is out)."""
    labels = [label for label in next(iter(timings.values())) if label.startswith("tiles ")]
    complete = [label for label in labels if all(label in case for case in timings.values())]
    best = min(complete, key=lambda label: sum(case[label] for case in timings.values()))
    with open(path, "w") as out:
        json.dump({"cases_ms": timings, "default": str(TILES), "fastest_over_cases": best[len("tiles "):]}, out, indent=1)


if __name__ == "__main__":
    main()
