"""What one mixed step costs the engine thread and the GPU, apart: is a small step bound by its
launches? (GPU only)

    python benchmarks/mixed_step.py [--budget 8192 2048 1536 1024] [--decode-rows 80] [--repeats 5]
                                    [--sleep-ms 400] [--cprofile]

Each step is what the scheduler builds at that budget in the middle of a W1 wave: fresh W1 prompts
(each with its 1024x1024 image, encoded in the step: no image cache) filling the budget after
`--decode-rows` single-token rows at a ~1395-token context, the last prompt cut where the budget
ends. The same step runs two ways, through the engine's own `ModelRunner.execute`:
- live: launched on an idle GPU, as in serving when the GPU waits for the step; the GPU time
  (events) holds every wait for a launch;
- fed: launched behind `torch.cuda._sleep`, so the whole step is queued before the GPU starts
  it: the GPU time is the work alone and the CPU time the launches alone (unless the launch queue
  fills first, which shows as a CPU time near the sleep).
live GPU - fed GPU is what launching costs the GPU; CPU fed against GPU fed says which side
bounds the step. --cprofile prints the engine thread's top Python functions for one live step.
Full-size synthetic checkpoint, bf16.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import tempfile
import time

import torch
from inprocess import request  # benchmarks/ is the script's folder

from flashsight.engine.config import EngineConfig
from flashsight.engine.engine import Engine
from flashsight.engine.image_cache import ImageCache
from flashsight.engine.testmodel import write_test_model

CLOCK_HZ = 1.98e9  # the H100's top SM clock: _sleep counts cycles


def new_sequence(engine: Engine, seed: int):
    """A fresh W1 sequence with the blocks for its prompt and one more token."""
    chat = request("W1", seed)
    prompt, _ = engine.prepare(chat)
    seq = engine._sequence(chat, prompt, None)
    engine.blocks.allocate(seq.block_table, len(seq.token_ids) + 1)
    return seq


def build_step(engine: Engine, budget: int, decode_rows: int, seed: int) -> tuple[list, dict]:
    batch, sequences = [], []
    for row in range(decode_rows):
        seq = new_sequence(engine, seed + row)
        # Its prompt counts as computed but for the last token, which this step decodes (the
        # pages hold whatever they hold: speed depends on shapes).
        seq.num_computed = len(seq.token_ids) - 1
        batch.append((seq, 1))
        sequences.append(seq)
    left, images = budget - decode_rows, 0
    while left > 0:
        seq = new_sequence(engine, seed + 1000 + images)
        count = min(left, len(seq.token_ids))
        batch.append((seq, count))
        sequences.append(seq)
        left -= count
        images += 1
    shape = {"tokens": budget, "decode_rows": decode_rows, "prompt_tokens": budget - decode_rows, "images": images}
    return batch, shape | {"sequences": sequences}


def timed(runner, batch, sleep_ms: float) -> tuple[float, float]:
    """(CPU ms to launch the step, GPU ms from its first kernel to its last)."""
    torch.cuda.synchronize()
    if sleep_ms:
        torch.cuda._sleep(int(sleep_ms * 1e-3 * CLOCK_HZ))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    began = time.perf_counter()
    runner.execute(batch)
    cpu_ms = (time.perf_counter() - began) * 1e3
    end.record()
    end.synchronize()
    return cpu_ms, start.elapsed_time(end)  # `start` fires after the sleep: the step alone


def measure(engine: Engine, budget: int, decode_rows: int, repeats: int, sleep_ms: float, profile: bool) -> None:
    batch, shape = build_step(engine, budget, decode_rows, seed=10_000 * budget)
    runner = engine.runner
    with torch.inference_mode():
        runner.execute(batch)  # compiles whatever this shape needs first
        live = [timed(runner, batch, 0) for _ in range(repeats)]
        fed = [timed(runner, batch, sleep_ms) for _ in range(repeats)]
        if profile:
            profiler = cProfile.Profile()
            torch.cuda.synchronize()
            profiler.enable()
            runner.execute(batch)
            profiler.disable()
            torch.cuda.synchronize()
    (cpu_live, gpu_live), (cpu_fed, gpu_fed) = (map(statistics.median, zip(*runs)) for runs in (live, fed))
    queue_full = cpu_fed > 0.8 * sleep_ms
    print(f"budget {budget}: {shape['prompt_tokens']} prompt tokens in {shape['images']} prompts (images), "
          f"{decode_rows} decode rows | live: CPU {cpu_live:.1f} ms, GPU {gpu_live:.1f} ms | fed: CPU {cpu_fed:.1f} ms"
          f"{' (launch queue full)' if queue_full else ''}, GPU {gpu_fed:.1f} ms | launching costs the GPU "
          f"{gpu_live - gpu_fed:.1f} ms", flush=True)  # fmt: skip
    if profile:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[:4000], flush=True)
    for seq in shape["sequences"]:
        engine.blocks.release(seq.block_table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--budget", type=int, nargs="+", default=[8192, 2048, 1536, 1024])
    parser.add_argument("--decode-rows", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sleep-ms", type=float, default=400.0)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    model = args.model or write_test_model(tempfile.mkdtemp(), size="full")
    engine = Engine(EngineConfig(model=str(model)))
    engine.runner.images = ImageCache(0)  # every step encodes its images, as fresh W1 images are
    try:
        for budget in args.budget:
            measure(engine, budget, args.decode_rows, args.repeats, args.sleep_ms, args.cprofile)
    finally:
        asyncio.run(engine.shutdown())


if __name__ == "__main__":
    main()
