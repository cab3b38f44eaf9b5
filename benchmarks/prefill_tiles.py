"""Time the text prefill attention kernel's tile shapes on W1's prompt shapes (GPU only).

    python benchmarks/prefill_tiles.py [--old PATH/TO/prefill_attention.py] [--defaults-only]

Tiles: `candidates()`. Shapes: one 1394-token prompt, five of them in one launch, and a 694-token chunk after 700
cached tokens; 32 query heads over 2 KV heads of 128 channels, bf16 (GLM-4.6V-Flash's text
attention). Prints ms and TFLOP/s per (BLOCK_M, BLOCK_N, warps, stages), an older kernel's
default for comparison, and SDPA's kernels on the whole-prompt shapes: the engine's own route
(`TritonOps.prompt_attention`: equal-length prompts batched, GQA without expanding the KV heads),
and the same call held to cuDNN's kernel alone and to FlashAttention's alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools

import torch
from triton.testing import do_bench

from flashsight.engine.kernels.prefill_attention import TILES, varlen_attention, varlen_attention_reference
from flashsight.engine.kernels.varlen_spans import VarlenSpans

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


def sdpa_route(q, k, v, spans: VarlenSpans, backend: str | None = None) -> torch.Tensor:
    """The engine's whole-prompt route with every prompt long enough for SDPA; `backend` holds
    SDPA to one kernel ("CUDNN_ATTENTION", "FLASH_ATTENTION"), which raises where it cannot run."""
    from torch.nn.attention import SDPBackend

    from flashsight.engine.kernels.ops import TritonOps

    held = [getattr(SDPBackend, backend)] if backend else None
    got = TritonOps.prompt_attention(q, k, v, spans, min_sdpa_len=0, sdpa_backends=held)
    if not TritonOps.sdpa_prompts:  # it fell back to Triton: the kernel cannot run these inputs
        TritonOps.sdpa_prompts = True
        raise RuntimeError(f"{backend or 'SDPA'} refused the inputs")
    return got


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
    args = parser.parse_args()
    old = None
    if args.old:
        spec = importlib.util.spec_from_file_location("old_prefill_attention", args.old)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    cases = {"one prompt": ([1394], [1394]), "five prompts": ([1394] * 5, [1394] * 5), "chunk after 700": ([694], [1394])}
    torch.manual_seed(0)
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
            timed("SDPA, the engine's route", lambda: sdpa_route(q, k, v, spans))
            for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION"):
                timed(f"SDPA held to {backend}", lambda backend=backend: sdpa_route(q, k, v, spans, backend))
        for tiles in [TILES] if args.defaults_only else candidates():
            timed(f"tiles {tiles}", lambda tiles=tiles: varlen_attention(q, k, v, spans, True, tiles=tiles))
        print(f"{name}: {flops / 1e9:.0f} GFLOP")
        for ms, label, error in sorted(rows)[:12]:
            print(f"  {ms * 1e3:8.1f} us  {flops / ms / 1e9:6.0f} TFLOP/s  max err {error:.1e}  {label}")
        for ms, label, error in rows:
            if label == "old kernel" or label == f"tiles {TILES}" or label.startswith("SDPA"):
                print(f"  {ms * 1e3:8.1f} us  {flops / ms / 1e9:6.0f} TFLOP/s  max err {error:.1e}  {label}"
                      + (" (default)" if label.startswith("tiles") else ""))  # fmt: skip


if __name__ == "__main__":
    main()
