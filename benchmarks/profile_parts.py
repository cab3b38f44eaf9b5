"""Where a loaded W1 step's GPU time goes, on a full-size synthetic model: each part of one W1
request timed alone (vision tower, text prefill, attention kernels against SDPA's backends), then
a kernel table of a loaded run (--workload at --concurrency) with the vision tower and the text
model marked as ranges.

    python benchmarks/profile_parts.py [--workload W1] [--concurrency 24] [--load-only] [--no-ranges] [--out DIR]

Prints achieved TFLOP/s beside each time, against the ~790 TFLOP/s bf16 ceiling measured on the
device (KINDS.md), so the gap to the limit is visible part by part.
"""

from __future__ import annotations

import argparse
import bisect
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


def device_work(events) -> list[tuple[float, float, str]]:
    """(start, end, name) of what ran on the GPU: kernels, copies, memsets. Named ranges also
    appear on the GPU's timeline (over the kernels launched in them); they are left out."""
    return sorted((e.time_range.start, e.time_range.end, e.name) for e in events
                  if e.device_type == torch.autograd.DeviceType.CUDA and not e.name.startswith("@"))  # fmt: skip


def gpu_gaps(events, top: int = 25) -> str:
    """Where the GPU sat idle in a profiled run: the gaps between kernels (all streams as one
    timeline), summed by the pair of kernels around each gap. Gaps inside a step are the GPU
    waiting for the CPU to queue work; the CUDA-event spans of inprocess.py cannot see them."""
    kernels = device_work(events)
    if not kernels:
        return "no kernels"
    busy_until, before = kernels[0][1], kernels[0][2]
    by_pair: dict[tuple[str, str], list] = {}
    sizes = {"<10 us": 0.0, "10-100 us": 0.0, "0.1-1 ms": 0.0, "1-10 ms": 0.0, ">10 ms": 0.0}
    for start, end, name in kernels[1:]:
        gap = start - busy_until
        if gap > 2:
            entry = by_pair.setdefault((before[:40], name[:40]), [0.0, 0])
            entry[0] += gap
            entry[1] += 1
            bucket = ("<10 us" if gap < 10 else "10-100 us" if gap < 100 else "0.1-1 ms" if gap < 1e3
                      else "1-10 ms" if gap < 1e4 else ">10 ms")  # fmt: skip
            sizes[bucket] += gap
        if end > busy_until:
            busy_until, before = end, name
    span = (busy_until - kernels[0][0]) / 1e6
    idle = sum(v[0] for v in by_pair.values()) / 1e6
    lines = [f"first kernel to last: {span:.2f} s, idle {idle:.2f} s ({100 * idle / span:.1f}%)",
             "idle by gap size: " + ", ".join(f"{k} {v / 1e6:.3f} s" for k, v in sizes.items()),
             "largest idle by the kernels around the gap (before -> after): total s, gaps"]  # fmt: skip
    for (a, b), (total, count) in sorted(by_pair.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"  {total / 1e6:7.3f} s {count:6d}  {a} -> {b}")
    return "\n".join(lines)


def all_threads() -> dict:
    """The profiler's option to record every thread's operations (the engine works on its own
    thread), where this PyTorch has it."""
    try:
        return {"experimental_config": torch._C._profiler._ExperimentalConfig(profile_all_threads=True)}
    except (AttributeError, TypeError):
        print("this PyTorch's profiler records the calling thread only: no ranges from the engine thread")
        return {}


def marked(label: str, fn):
    def run(*args, **kwargs):
        with tp.record_function(label):
            return fn(*args, **kwargs)

    return run


def mark_ranges(engine: Engine) -> list[str]:
    """Name the engine loop's parts as profiler ranges (labels start with "@"), so the GPU's idle
    gaps can be put down to what the engine thread was doing meanwhile. Returns the labels."""
    import flashsight.engine.engine as engine_module
    import flashsight.engine.model.vision as vision_module

    model, runner = engine.ckpt.model, engine.runner
    vision, text = model.model.visual, model.model.language_model
    targets = [
        (engine, "_read_back", "@read back"), (engine, "_launch", "@launch"),
        (engine.scheduler, "schedule", "@schedule"), (engine_module, "sample_batch", "@sample"),
        (runner, "execute", "@execute"), (runner, "_take_pending", "@take pending"),
        (runner, "_insert_images", "@insert images"), (runner.decoder, "execute", "@decode graph"),
        (model, "embed", "@embed"), (model, "encode_images", "@vision tower"), (model, "forward", "@text model"),
        (model, "logits", "@logits"), (vision_module, "patch_positions", "@vision positions"),
        (vision, "rotary", "@vision rotary"), (vision.embeddings, "forward", "@vision position table"),
        (vision.patch_embed, "forward", "@patch embed"), (vision.merger, "forward", "@merger"),
        (text.rotary_emb, "forward", "@text rotary"),
    ]  # fmt: skip
    targets += [(block, "forward", "@vision block") for block in vision.blocks]
    targets += [(layer, "forward", "@text layer") for layer in text.layers]
    for obj, attr, label in targets:
        setattr(obj, attr, marked(label, getattr(obj, attr)))
    return sorted({label for _, _, label in targets})


def gaps_by_range(events, labels: list[str], top: int = 30) -> str:
    """GPU idle (gaps over 5 us between kernels) by the innermost marked range the CPU was in
    at each gap's midpoint: what the engine thread was doing while the GPU waited."""
    wanted = set(labels)
    ranges = sorted((e.time_range.start, e.time_range.end, e.name) for e in events
                    if e.device_type == torch.autograd.DeviceType.CPU and e.name in wanted)  # fmt: skip
    kernels = device_work(events)
    gaps, busy_until = [], kernels[0][1] if kernels else 0
    for start, end, name in kernels[1:]:
        if start - busy_until > 5:
            gaps.append((busy_until, start, name))
        busy_until = max(busy_until, end)
    starts = [r[0] for r in ranges]
    totals: dict[str, list] = {}
    for g0, g1, after in gaps:
        mid = (g0 + g1) / 2
        inner = "(no marked range)"
        # ranges nest, so the innermost one holding `mid` is the latest-starting one that does
        # (a step holds fewer than ~100 ranges: looking 400 back reaches the step's outermost)
        latest = bisect.bisect_right(starts, mid) - 1
        for index in range(latest, max(-1, latest - 400), -1):
            r0, r1, label = ranges[index]
            if r1 >= mid:
                inner = label
                break
        entry = totals.setdefault(f"{inner} | next: {after[:40]}", [0.0, 0])
        entry[0] += g1 - g0
        entry[1] += 1
    lines = ["GPU idle by the engine thread's innermost range at the gap (range | kernel after): s, gaps"]
    for key, (total, count) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"  {total / 1e6:7.3f} s {count:6d}  {key}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", default="W1", choices=["W1", "W2"])
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--load-only", action="store_true", help="only the loaded run's kernel table")
    parser.add_argument("--no-ranges", action="store_true",
                        help="no marked ranges: the gaps without the all-threads profiler's overhead on the engine thread")
    parser.add_argument("--max-num-batched-tokens", type=int, default=EngineConfig.max_num_batched_tokens)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    engine = Engine(EngineConfig(model=str(write_test_model(tempfile.mkdtemp(), size="full")),
                                 max_num_batched_tokens=args.max_num_batched_tokens))  # fmt: skip
    asyncio.run(level(engine, args.workload, 2, 1))  # warm-up
    if not args.load_only:
        parts = parts_of_one_request(engine)
        print(json.dumps(parts, indent=2), flush=True)
        profile_repeats(engine, args.out)
    labels = [] if args.no_ranges else mark_ranges(engine)
    counters = ("num_alloc_retries", "num_device_alloc", "num_device_free", "num_sync_all_streams")
    before = torch.cuda.memory_stats()
    threads = {} if args.no_ranges else all_threads()
    with tp.profile(activities=[tp.ProfilerActivity.CPU, tp.ProfilerActivity.CUDA], **threads) as prof:
        result = asyncio.run(level(engine, args.workload, args.concurrency, 50_000))
    after = torch.cuda.memory_stats()
    result["allocator"] = {name: after.get(name, 0) - before.get(name, 0) for name in counters}
    print(json.dumps(result), flush=True)
    averages = prof.key_averages()
    kernels_us = sum(e.self_device_time_total for e in averages
                     if e.device_type == torch.autograd.DeviceType.CUDA and not e.key.startswith("@"))  # fmt: skip
    print(f"kernel time in all: {kernels_us / 1e6:.2f} s", flush=True)
    events = prof.events()
    print(gpu_gaps(events), flush=True)
    if labels:
        print(gaps_by_range(events, labels), flush=True)
    table = averages.table(sort_by="cuda_time_total", row_limit=60, max_name_column_width=70)
    with open(os.path.join(args.out, f"profile_load_{args.workload}.txt"), "w") as file:
        file.write(table)
    print("\n".join(line[:70] + line[-60:] for line in table.splitlines()[:36]))
    asyncio.run(engine.shutdown())


if __name__ == "__main__":
    main()
