"""Where a loaded W1 step's GPU time goes, on a full-size synthetic model: each part of one W1
request timed alone (vision tower, text prefill, attention kernels against SDPA's backends), then
a kernel table of a loaded run (W1 at --concurrency) with the vision tower and the text model
marked as ranges.

    python benchmarks/profile_parts.py [--concurrency 24] [--out DIR]

Prints achieved TFLOP/s beside each time, against the ~790 TFLOP/s bf16 ceiling measured on the
device (KINDS.md), so the gap to the limit is visible part by part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile

import torch
import torch.nn.functional as F
import torch.profiler as tp
from inprocess import level, one_request, request  # benchmarks/ is the script's folder

from flashsight.engine.config import EngineConfig
from flashsight.engine.engine import Engine
from flashsight.engine.kernels.varlen_spans import VarlenSpans
from flashsight.engine.testmodel import write_test_model


def cuda_ms(fn, repeats: int = 10) -> float:
    """Median device time of fn() in ms, after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def attention_kernels(ops, tokens: int, heads: int, kv_heads: int, causal: bool) -> dict:
    """The Triton varlen kernel and SDPA's backends on one sequence of `tokens`."""
    dim = 128
    q = torch.randn(tokens, heads, dim, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(tokens, kv_heads, dim, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    flops = 4 * tokens * tokens * heads * dim / (2 if causal else 1)
    spans = VarlenSpans.square([tokens])
    results = {"triton_varlen": cuda_ms(lambda: ops.varlen_attention(q, k, v, spans, causal))}
    qt, kt, vt = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
    if kv_heads != heads:
        kt, vt = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (kt, vt))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION)):  # fmt: skip
        try:
            with sdpa_kernel(backend):
                results[name] = cuda_ms(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal))
        except RuntimeError as exc:
            results[name] = f"unavailable: {str(exc)[:80]}"
    return {name: (f"{ms:.3f} ms, {flops / ms / 1e9:.0f} TFLOP/s" if isinstance(ms, float) else ms)
            for name, ms in results.items()}  # fmt: skip


def parts_of_one_request(engine: Engine) -> dict:
    chat = request("W1", 5)
    prompt, _ = engine.prepare(chat)
    model = engine.ckpt.model
    pixels = prompt.image_pixels(0).to("cuda")
    grids = [prompt.image_grids[0]]
    patches = grids[0][0] * grids[0][1] * grids[0][2]
    out = {"image_patches": patches, "prompt_tokens": len(prompt.token_ids)}
    with torch.inference_mode():
        out["vision_tower_ms"] = round(cuda_ms(lambda: model.encode_images(pixels, grids)), 2)
        seq = engine._sequence(chat, prompt, None)
        engine.blocks.allocate(seq.block_table, len(seq.token_ids))
        runner = engine.runner
        images = runner.images
        runner.images = type(images)(2**34)  # the vision output cached: time the text model alone
        runner.execute([(seq, len(seq.token_ids))])
        out["text_prefill_ms"] = round(cuda_ms(lambda: runner.execute([(seq, len(seq.token_ids))])), 2)
        runner.images = images
        engine.blocks.release(seq.block_table)
    ops = model.model.language_model.ops
    out["vision_attention_one_layer"] = attention_kernels(ops, patches, 12, 12, causal=False)
    out["text_attention_one_layer"] = attention_kernels(ops, len(prompt.token_ids), 32, 2, causal=True)
    return out


def profile_repeats(engine: Engine, out_dir: str) -> None:
    """Three W1-repeat requests (the image and prompt already cached), by CPU time: a cached
    request computes two tokens, so whatever its TTFT holds beyond that is overhead."""
    asyncio.run(one_request(engine, request("W1-repeat", 0)))
    with tp.profile(activities=[tp.ProfilerActivity.CPU, tp.ProfilerActivity.CUDA]) as prof:
        ttfts = [asyncio.run(one_request(engine, request("W1-repeat", i)))["ttft_ms"] for i in range(3)]
    print("W1-repeat TTFT under the profiler, ms:", [round(t, 1) for t in ttfts], flush=True)
    table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=40, max_name_column_width=70)
    with open(os.path.join(out_dir, "profile_repeat.txt"), "w") as file:
        file.write(table)


def mark_ranges(engine: Engine) -> None:
    model = engine.ckpt.model
    encode, forward = model.encode_images, model.forward

    def encode_marked(*args, **kwargs):
        with tp.record_function("vision tower"):
            return encode(*args, **kwargs)

    def forward_marked(*args, **kwargs):
        with tp.record_function("text model (eager steps)"):
            return forward(*args, **kwargs)

    model.encode_images, model.forward = encode_marked, forward_marked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--max-num-batched-tokens", type=int, default=EngineConfig.max_num_batched_tokens)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    engine = Engine(EngineConfig(model=str(write_test_model(tempfile.mkdtemp(), size="full")),
                                 max_num_batched_tokens=args.max_num_batched_tokens))  # fmt: skip
    asyncio.run(level(engine, "W1", 2, 1))  # warm-up
    parts = parts_of_one_request(engine)
    print(json.dumps(parts, indent=2), flush=True)
    profile_repeats(engine, args.out)
    mark_ranges(engine)
    with tp.profile(activities=[tp.ProfilerActivity.CPU, tp.ProfilerActivity.CUDA]) as prof:
        result = asyncio.run(level(engine, "W1", args.concurrency, 50_000))
    print(json.dumps(result), flush=True)
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=45, max_name_column_width=70)
    with open(os.path.join(args.out, "profile_load.txt"), "w") as file:
        file.write(table)
    print("\n".join(line[:70] + line[-60:] for line in table.splitlines()[:36]))
    asyncio.run(engine.shutdown())


if __name__ == "__main__":
    main()
