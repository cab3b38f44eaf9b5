"""Where one decode step's GPU time goes: the engine's own CUDA graph for a batch size, replayed
with every sequence at the same context, timed, then its kernels tabled (GPU only).

    python benchmarks/decode_step.py [--rows 1 112] [--context 1450] [--no-pdl] [--top 14] [--sweep]
                                     [--blas cublas cublaslt] [--tunable]

--sweep re-captures the graph with both orders of a kernel's wait and its trigger of the next at
several weight-prefetch depths, then with each product's other split-K launch plans, one product
at a time (the others on their defaults): timed where they run, with the weights cold in L2 and
the neighbouring kernels overlapping, which a product timed alone (skinny_gemm.py) cannot show.

Full-size synthetic checkpoint, bf16. Each sequence reads its own pages of the KV cache (whatever
they hold: speed depends on shapes). A served step also samples and copies its inputs; this is
the graph alone, the part the kernels decide. --blas re-captures each batch with every product
past the split-K kernel's rows in one cuBLAS library, then the other (the engine picks by shape).
--tunable re-captures it with PyTorch's TunableOp choosing each cuBLAS product's algorithm by timing
(cuBLASLt's heuristic candidates where this PyTorch offers them; its table is keyed by shape, not
library) and prints what it chose.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import torch.profiler as tp

from flashsight.engine.config import EngineConfig
from flashsight.engine.engine import Engine
from flashsight.engine.kernels import dependent_launch, linear, skinny_matmul
from flashsight.engine.kernels.skinny_matmul import SkinnyPlan
from flashsight.engine.testmodel import write_test_model
from product_rows import tunable_on, tuned_choices  # benchmarks/ is the script's folder


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


PRODUCTS = {"qkv": (4608, 4096), "o": (4096, 4096), "gate_up": (27392, 4096), "down": (4096, 13696)}
CANDIDATES = [SkinnyPlan(*plan) for plan in [
    (64, 64, 1, 4, 6), (64, 64, 2, 4, 6), (64, 64, 4, 4, 6), (32, 64, 1, 4, 6), (32, 128, 2, 4, 4),
    (64, 128, 1, 4, 4), (64, 128, 2, 4, 4), (64, 256, 1, 4, 3), (64, 128, 1, 8, 4), (64, 256, 2, 4, 3),
]]  # fmt: skip
PREFETCHES = (0, 256, 512, 1024, 2048)
ORDERS = {"wait first": dependent_launch.WAIT_FIRST, "trigger first": dependent_launch.TRIGGER_FIRST}


def sweep(runner, rows: int, context: int) -> None:
    """Both orders of a kernel's wait and its trigger of the next, by how many columns of weights
    each product asks of L2 before its wait (dependent_launch, skinny_matmul), then each product's
    candidate plans (the others on their defaults), then the best of each together. The gated
    gate/up product ignores splits (one slice), so only its tiles vary."""
    default_plan, default_prefetch = skinny_matmul.plan_for, skinny_matmul.PREFETCH_COLUMNS
    bucket = runner._bucket(rows)
    default_order = dependent_launch.enabled(runner.inputs.slots)

    def step_ms(plans: dict, prefetch: int = default_prefetch, order: int = default_order) -> float:
        skinny_matmul.plan_for = lambda n, k: plans.get((n, k)) or default_plan(n, k)
        skinny_matmul.PREFETCH_COLUMNS = prefetch
        dependent_launch.allow(True, order)
        with torch.inference_mode():
            runner._forward(runner.inputs.first(bucket))  # compiles outside the capture
            runner._capture(bucket)
        fill(runner, rows, bucket, context)
        return min(replay_ms(runner.graphs[bucket][0]) for _ in range(3))

    base = step_ms({})
    print(f"sweep, {rows} rows, context {context}: defaults {base:.3f} ms per replay (prefetch {default_prefetch}, "
          f"order {default_order})")  # fmt: skip
    for name, order in ORDERS.items():
        print(f"  {name}, by prefetch columns: " + ", ".join(f"{cols} {step_ms({}, cols, order):.3f}" for cols in PREFETCHES))
    best = {}
    for name, shape in PRODUCTS.items():
        seen, results = set(), []
        for plan in CANDIDATES:
            key = plan._replace(splits=1) if name == "gate_up" else plan
            if key in seen or key == default_plan(*shape):
                continue
            seen.add(key)
            try:
                results.append((step_ms({shape: plan}), plan))
            except Exception as error:  # a tile too large for shared memory
                print(f"  {name} {tuple(plan)}: {type(error).__name__}")
        results.sort()
        if results and results[0][0] < base:
            best[shape] = results[0][1]
        print(f"  {name} default {tuple(default_plan(*shape))}: {base:.3f} ms; best: "
              + ", ".join(f"{tuple(plan)} {ms:.3f}" for ms, plan in results[:4]))  # fmt: skip
    if best:
        print(f"  the best of each together: {step_ms(best):.3f} ms, {[tuple(plan) for plan in best.values()]}")
    skinny_matmul.plan_for, skinny_matmul.PREFETCH_COLUMNS = default_plan, default_prefetch
    dependent_launch.allow(True, default_order)


def tuned_step_ms(runner, rows: int, context: int) -> float:
    """The step re-captured after TunableOp timed each product's candidates in an eager pass;
    TunableOp stays off afterwards."""
    bucket = runner._bucket(rows)
    tunable_on(max_ms=50)
    try:
        with torch.inference_mode():
            runner._forward(runner.inputs.first(bucket))  # each product's shape timed here
            torch.cuda.tunable.tuning_enable(False)
            runner._capture(bucket)
        fill(runner, rows, bucket, context)
        ms = min(replay_ms(runner.graphs[bucket][0]) for _ in range(3))
        chosen = tuned_choices()
    finally:
        torch.cuda.tunable.enable(False)
    print(f"  TunableOp: {ms:.3f} ms per replay; chosen:")
    print("\n".join(f"  {line}" for line in chosen))
    return ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 112])
    parser.add_argument("--context", type=int, default=1450)
    parser.add_argument("--no-pdl", action="store_true", help="launch no kernel as a programmatic dependent")
    parser.add_argument("--top", type=int, default=14)
    parser.add_argument("--sweep", action="store_true", help="time the launch orders, prefetch depths and products' plans in the step")
    parser.add_argument("--blas", nargs="*", default=[], choices=["cublas", "cublaslt"],
                        help="also time the step with every product in this cuBLAS library")
    parser.add_argument("--tunable", action="store_true", help="also time it with TunableOp's choice of algorithms")
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
        if args.sweep:
            sweep(runner, rows, args.context)
        for library in args.blas:
            by_shape, linear.library_for = linear.library_for, lambda weight, library=library: library
            with torch.inference_mode():
                runner._capture(bucket)
            fill(runner, rows, bucket, args.context)
            print(f"  every product in {library}: {min(replay_ms(runner.graphs[bucket][0]) for _ in range(3)):.3f} ms per replay")
            linear.library_for = by_shape
        if args.tunable:
            try:
                tuned_step_ms(runner, rows, args.context)
            except Exception as error:  # a PyTorch whose TunableOp cannot do this
                print(f"  TunableOp: {type(error).__name__}: {error}")
            with torch.inference_mode():
                runner._capture(bucket)


if __name__ == "__main__":
    main()
