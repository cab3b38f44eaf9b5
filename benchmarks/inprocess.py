"""Time the engine in-process (no HTTP) on ANCHORS.md's workloads with a full-size synthetic model.

    python benchmarks/inprocess.py [--model DIR] [--workload W1 W2 W1-repeat] [--concurrency 1 8]
                                   [--profile FILE] [--timeline DIR]

W1: a fresh 1024x1024 JPEG + "Describe this image in detail.", 128 output tokens; W2: a fresh
640x480 JPEG + a one-line question, 32 output tokens; W1-repeat: W1 at concurrency 1 with an image
the engine has already seen. ignore_eos and min_tokens, greedy; closed loop, n = max(10, 3 x concurrency) per
level after a warm-up (`--repetition-penalty 1.1` adds the checkpoint's default penalty, which
HTTP requests get). `flashsight bench` measures the same over HTTP; this isolates the engine.
`--engine-process` runs the engine as `flashsight serve` does, in its supervised child process
behind the pipe, with no HTTP: set beside the default and the HTTP figures, it tells what the
engine's process costs from what the HTTP server costs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from flashsight.engine.config import EngineConfig
from flashsight.engine.engine import Engine
from flashsight.engine.kernels import dependent_launch
from flashsight.engine.testmodel import write_test_model
from flashsight.engine.types import ChatRequest, SamplingParams
from timeline import StepTimeline  # benchmarks/ is the script's folder

WORKLOADS = {  # size, prompt, output tokens
    "W1": ((1024, 1024), "Describe this image in detail.", 128),
    "W2": ((640, 480), "What is the error message in this screenshot?", 32),
}


def fresh_photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """A JPEG-decoded image of smooth noise, so the JPEG is photo-sized (~200 KB at 1024x1024)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


# The time to first token by stage, as the server's /metrics splits it (`receive` is the server's
# own, and `handoff` is the engine's call from here: ~0).
PHASES = ("handoff", "prepare", "queue", "prefill", "delivery")


def request(workload: str, seed: int, repetition_penalty: float = 1.0) -> ChatRequest:
    size, text, tokens = WORKLOADS[workload.removesuffix("-repeat")]
    image = fresh_photo(0 if workload.endswith("-repeat") else seed, size)
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]
    # What `flashsight bench` asks for over HTTP: exactly `tokens` tokens (min_tokens keeps EOS
    # masked until then, as it does on the HTTP path), greedy.
    sampling = SamplingParams(max_tokens=tokens, min_tokens=tokens, temperature=0.0, ignore_eos=True,
                              repetition_penalty=repetition_penalty)  # fmt: skip
    return ChatRequest(f"{workload}-{seed}", messages, sampling)


async def one_request(engine: Engine, chat: ChatRequest) -> dict:
    start, started = time.perf_counter(), time.monotonic()
    first = last = None
    phases = {}
    async for event in engine.generate(chat):
        if first is None:
            first = time.perf_counter()
            if (line := event.timeline) is not None:  # the same stages as the server's metrics
                marks = (started, line.received, line.prepared, line.scheduled, line.first_token, time.monotonic())
                phases = dict(zip(PHASES, (b - a for a, b in zip(marks, marks[1:]))))
        last = event
    end = time.perf_counter()
    decode_s = end - first
    return {"ttft_ms": (first - start) * 1e3, "e2e_s": end - start, "prompt_tokens": last.prompt_tokens,
            "output_tokens": last.completion_tokens, "phases": phases,
            "decode_tok_s": (last.completion_tokens - 1) / decode_s if decode_s > 0 else 0.0}  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def level(engine: Engine, workload: str, concurrency: int, seed0: int, repetition_penalty: float = 1.0,
                timeline=None) -> dict:  # fmt: skip
    total = max(10, 3 * concurrency)
    chats = [request(workload, seed, repetition_penalty) for seed in range(seed0, seed0 + total)]  # images made before timing
    queue = iter(chats)
    results = []

    async def client():
        for chat in queue:
            results.append(await one_request(engine, chat))

    before = engine_counts(engine)
    if timeline is not None:
        timeline.start()
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    steps_record = timeline.finish(wall) if timeline is not None else None
    after = engine_counts(engine)
    moved = {key: after.get(key, 0) - before.get(key, 0) for key in ENGINE_COUNTS}
    steps, rows = moved["steps"], moved["batched_rows"]
    ttft, e2e = [r["ttft_ms"] for r in results], [r["e2e_s"] for r in results]
    return {
        "workload": workload, "concurrency": concurrency, "requests": total,
        "prompt_tokens": results[0]["prompt_tokens"],
        "ttft_ms_p50": round(percentile(ttft, 50), 1), "ttft_ms_p95": round(percentile(ttft, 95), 1),
        "e2e_s_p50": round(percentile(e2e, 50), 3), "e2e_s_p95": round(percentile(e2e, 95), 3),
        "decode_tok_s_p50": round(statistics.median(r["decode_tok_s"] for r in results), 1),
        "requests_s": round(total / wall, 2),
        "output_tok_s": round(sum(r["output_tokens"] for r in results) / wall, 1),
        "rows_per_step": round(rows / steps, 1) if steps else None,
        "steps": steps, "mixed_steps": moved["mixed_steps"],
        "gpu_s": {"steps": round(moved["gpu_busy_s"], 2), "mixed": round(moved["gpu_mixed_s"], 2),
                  "waiting_between": round(moved["gpu_wait_s"], 3)},  # the engine's own step timer
        "launch_s": {"steps": round(moved["launch_s"], 2), "mixed": round(moved["launch_mixed_s"], 2)},  # its thread
        "ttft_phases_ms": {phase: round(statistics.fmean(r["phases"][phase] for r in results if r["phases"]) * 1e3, 1)
                           for phase in PHASES if any(r["phases"] for r in results)},  # means
        **({"timeline": steps_record} if steps_record else {}),
    }  # fmt: skip


ENGINE_COUNTS = ("steps", "mixed_steps", "batched_rows", "gpu_busy_s", "gpu_mixed_s", "gpu_wait_s", "launch_s",
                 "launch_mixed_s")  # fmt: skip


def engine_counts(engine) -> dict:
    """The engine's step counters, from its own object or, for an engine process, its last report."""
    return engine.counts() if isinstance(engine, Engine) else engine.snapshot()


class LoopTimer:
    """Wall time of the engine loop's parts, per level: where a loaded step's time goes. Nothing
    here synchronizes (that would stop the loop from running ahead of the GPU): "mixed steps" and
    "decode steps" are the CPU time to queue a step, and "_read_back" includes the wait for the
    GPU, so a large share there means the GPU, not the CPU, sets the pace. The GPU's own time
    (on steps, and waiting between them) is the engine's step timer, in each level's `gpu_s`."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.reset()
        runner, execute = engine.runner, engine.runner.execute

        def timed_execute(batch, previous=None):
            kind = "decode steps" if runner.decoder is not None and runner.decoder.accepts(batch) else "mixed steps"
            start = time.perf_counter()
            result = execute(batch, previous)
            self.add(kind, start, tokens=sum(count for _, count in batch))
            return result

        runner.execute = timed_execute
        for name in ("_read_back", "_drop_cancelled", "_launch", "_build_prompts"):
            setattr(engine, name, self.wrap(name, getattr(engine, name)))
        engine.scheduler.schedule = self.wrap("schedule", engine.scheduler.schedule)

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, start)

        return timed

    def add(self, name: str, start: float, tokens: int = 0) -> None:
        entry = self.totals.setdefault(name, [0.0, 0, 0])
        entry[0] += time.perf_counter() - start
        entry[1] += 1
        entry[2] += tokens

    def reset(self) -> None:
        self.totals: dict[str, list] = {}

    def report(self) -> dict:
        return {name: {"total_s": round(t, 2), "calls": n, **({"tokens": k} if k else {})}
                for name, (t, n, k) in self.totals.items()}  # fmt: skip


def prepare_ms(engine: Engine, workload: str) -> float:
    """CPU time to tokenize and preprocess one request's image (part of TTFT)."""
    chats = [request(workload, 90_000 + i) for i in range(5)]
    start = time.perf_counter()
    for chat in chats:
        engine.prepare(chat)
    return round((time.perf_counter() - start) / len(chats) * 1e3, 1)


def profile_one(engine: Engine, path: str) -> None:
    """A kernel-time table of one W1 request, for BENCHMARKS.md's 'where the time goes'."""
    import torch.profiler as tp

    with tp.profile(activities=[tp.ProfilerActivity.CPU, tp.ProfilerActivity.CUDA]) as prof:
        asyncio.run(one_request(engine, request("W1", 77_777)))
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30)
    with open(path, "w") as out:
        out.write(table)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--workload", nargs="+", default=["W1"], choices=["W1", "W2", "W1-repeat"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--kernels", default="auto", choices=["auto", "triton", "torch", "fa4"])
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false")
    parser.add_argument("--max-num-batched-tokens", type=int, nargs="+", default=[EngineConfig.max_num_batched_tokens],
                        help="the step's token budget; several values run each level once per value")
    parser.add_argument("--no-pdl", action="store_true", help="launch no kernel as a programmatic dependent")
    parser.add_argument("--profile", help="write a kernel-time table of one W1 request here")
    parser.add_argument("--json", help="also write the summary here")
    parser.add_argument("--timeline", metavar="DIR", help="write each loaded level's steps on the device's clock here "
                        "(benchmarks/timeline.py); its summary joins the level's line")
    parser.add_argument("--switch-interval-ms", type=float, help="the GIL's switch interval (Python's default: 5)")
    parser.add_argument("--engine-process", action="store_true",
                        help="the engine in its supervised child process, as `flashsight serve` runs it")
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="the levels' requests' (1.1 is the checkpoint's default, which HTTP requests that leave it out get)")
    parser.add_argument("--log-level", default="WARNING", help="the engine's log level (INFO shows start-up's choices)")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1e3)
    if args.no_pdl:
        dependent_launch.allow(False)
    model = args.model or write_test_model(tempfile.mkdtemp(), size="full")
    start = time.perf_counter()
    config = EngineConfig(model=str(model), kernels=args.kernels, cuda_graphs=args.cuda_graphs,
                          max_num_batched_tokens=args.max_num_batched_tokens[0])  # fmt: skip
    if args.engine_process:
        from flashsight.cli import load_engine
        from flashsight.server.settings import ServerSettings

        if len(args.max_num_batched_tokens) > 1 or args.profile:
            parser.error("--engine-process takes one --max-num-batched-tokens and no --profile")
        engine = load_engine(config, ServerSettings())
    else:
        engine = Engine(config)
    summary = {"device": engine.info.device, "dtype": engine.info.dtype, "kernels": args.kernels,
               "cuda_graphs": args.cuda_graphs, "pdl": not args.no_pdl, "max_num_batched_tokens": args.max_num_batched_tokens,
               "startup_s": round(time.perf_counter() - start, 1), "switch_interval_ms": sys.getswitchinterval() * 1e3,
               "repetition_penalty": args.repetition_penalty, "engine_process": args.engine_process}  # fmt: skip
    asyncio.run(one_request(engine, request("W1", 10_000)))  # warm-up
    asyncio.run(one_request(engine, request("W2", 10_001)))
    if not args.engine_process:  # these reach into the engine's object
        summary["prepare_ms"] = {w: prepare_ms(engine, w) for w in ("W1", "W2")}
    if args.profile:
        profile_one(engine, args.profile)
    summary["levels"] = []
    timer = None if args.engine_process else LoopTimer(engine)
    if args.timeline and (args.engine_process or engine.info.device == "cpu"):
        parser.error("--timeline needs the engine in this process, on a GPU")
    timeline = StepTimeline(engine) if args.timeline else None
    for w_index, workload in enumerate(args.workload):
        levels = [1] if workload == "W1-repeat" else args.concurrency
        for c_index, concurrency in enumerate(levels):
            for b_index, budget in enumerate(args.max_num_batched_tokens):
                if timer is not None:
                    engine.scheduler.max_num_batched_tokens = budget  # between levels the engine is idle
                    timer.reset()
                seed0 = 100_000 * (w_index + 1) + 10_000 * c_index + 1000 * b_index
                result = asyncio.run(level(engine, workload, concurrency, seed0, args.repetition_penalty,
                                           timeline if concurrency > 1 else None))  # fmt: skip
                result["max_num_batched_tokens"] = budget
                if "timeline" in result:
                    record = result.pop("timeline")
                    timeline.write(args.timeline, f"{workload}-c{concurrency}-b{budget}-{b_index}", record)
                    result["timeline"] = record["summary"]
                if timer is not None:
                    result["engine_loop"] = timer.report()
                print(json.dumps(result), flush=True)
                summary["levels"].append(result)
    summary["engine"] = engine.snapshot()
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=2)
    asyncio.run(engine.shutdown())


if __name__ == "__main__":
    main()
