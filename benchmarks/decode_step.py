"""Where one decode step's GPU time goes: the engine's own CUDA graph for a batch size, replayed
with every sequence at the same context, timed, then its kernels tabled (GPU only).

    python benchmarks/decode_step.py [--rows 1 112] [--context 1450] [--no-pdl] [--top 14]

Full-size synthetic checkpoint, bf16. Each sequence reads its own pages of the KV cache (whatever
they hold: speed depends on shapes). A served step also samples and copies its inputs; this is
the graph alone, the part the kernels decide.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import torch.profiler as tp

from flashsight.engine.config import EngineConfig
from flashsight.engine.engine import Engine
from flashsight.engine.kernels import dependent_launch
from flashsight.engine.testmodel import write_test_model


def fill(runner, rows: int, bucket: int, context: int) -> None:
    """Rows 0..rows-1 decode their token `context` over their own pages; the rest are padding."""
    inputs, page = runner.inputs, runner.cache.block_size
    pages = -(-context // page)
    tables = torch.arange(rows * pages, dtype=torch.int32, device=runner.device).view(rows, pages)
    inputs.block_tables[:rows, :pages] = tables
    inputs.context_lens[:rows] = context
    inputs.context_lens[rows:bucket] = 0
    inputs.slots[:rows] = tables[:, -1].long() * page + (context - 1) % page
    inputs.slots[rows:bucket] = runner.cache.scratch_slot
    inputs.positions[:, :bucket] = context - 1
    inputs.token_ids[:bucket] = 100


def replay_ms(graph, repeats: int = 50) -> float:
    for _ in range(5):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def kernel_table(graph, top: int, repeats: int = 20) -> list[str]:
    with tp.profile(activities=[tp.ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            graph.replay()
        torch.cuda.synchronize()
    rows = [e for e in prof.key_averages() if e.device_time_total > 0]
    rows.sort(key=lambda e: -e.device_time_total)
    total = sum(e.device_time_total for e in rows) / repeats
    lines = [f"  kernels: {total / 1e3:.2f} ms per step, {sum(e.count for e in rows) // repeats} launches"]
    for e in rows[:top]:
        lines.append(f"  {e.device_time_total / repeats:8.1f} us {e.count // repeats:5d} x  {e.key[:70]}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 112])
    parser.add_argument("--context", type=int, default=1450)
    parser.add_argument("--no-pdl", action="store_true", help="launch no kernel as a programmatic dependent")
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args()
    dependent_launch.allow(not args.no_pdl)
    model = write_test_model(tempfile.mkdtemp(), size="full")
    engine = Engine(EngineConfig(model=str(model)))
    runner = engine.runner.decoder
    for rows in args.rows:
        bucket = runner._bucket(rows)
        graph, _ = runner.graphs[bucket]
        fill(runner, rows, bucket, args.context)
        print(f"{rows} rows (graph of {bucket}), context {args.context}, pdl {not args.no_pdl}: "
              f"{replay_ms(graph):.3f} ms per replay")  # fmt: skip
        print("\n".join(kernel_table(graph, args.top)))


if __name__ == "__main__":
    main()
