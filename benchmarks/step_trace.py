"""A kernel trace of a window of the engine's loaded steps, wherever the engine runs (in-process,
or in `flashsight serve`'s engine process), and where the GPU idled inside it.

The step timer says how long the GPU spent on steps; this says what it did then. Run 57 found the
same W2 load costing 18-23% more GPU time on steps over HTTP than in-process, with no wait
between steps: either the kernels themselves ran slower, or the GPU idled inside the steps
waiting for the engine thread to launch their kernels. Over one window of steps this adds up the
kernels' time, the GPU's idle gaps between them, and for each gap whether the kernel after it
was launched late (the CPU behind: the GIL, Python) or early (a wait on another stream, a copy).

Enabled by the environment, so that `flashsight serve`'s engine process, which no benchmark can
reach into, traces itself too (`benchmarks/trace_site` on PYTHONPATH installs the hook there):

    FLASHSIGHT_STEP_TRACE=DIR  [FLASHSIGHT_STEP_TRACE_SKIP=30 FLASHSIGHT_STEP_TRACE_STEPS=60
                                FLASHSIGHT_STEP_TRACE_MIN_ROWS=30]

The window starts after SKIP steps of at least MIN_ROWS rows and holds the next STEPS steps (or
what 30 s of them hold); each process writes DIR/trace-<pid>.json (the profiler's own export) and
DIR/steps-<pid>.json (each step's rows, tokens and CPU time to launch) once, and nothing else: on
the device (session 14), reading the trace back and packing it in the traced process held its
GIL for seconds while the load went on, and a process that ended first lost the summary.
`python3 step_trace.py DIR...` summarizes every trace in the folders afterwards, into
trace-<pid>.txt beside each, and packs each trace as trace-<pid>.json.gz. As the profiler starts
on the engine's thread, Kineto logs "ERROR: External init callback must run in same thread as
registerClient"; the trace is written whole all the same.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

_GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
_GAP_US = 20.0  # gaps shorter than this are the launch pipeline's own, not a stall
_WINDOW_S = 30.0  # the longest a window stays open


def install_from_environment(engine_cls) -> None:
    out = os.environ.get("FLASHSIGHT_STEP_TRACE")
    if not out:
        return
    env = os.environ.get
    tracer = StepTracer(Path(out), int(env("FLASHSIGHT_STEP_TRACE_SKIP", 30)), int(env("FLASHSIGHT_STEP_TRACE_STEPS", 60)),
                        int(env("FLASHSIGHT_STEP_TRACE_MIN_ROWS", 30)))  # fmt: skip
    launch = engine_cls._launch

    def traced_launch(engine, batch):
        return tracer.step(batch, lambda: launch(engine, batch))

    engine_cls._launch = traced_launch


class StepTracer:
    def __init__(self, out: Path, skip: int, steps: int, min_rows: int):
        self.out, self.skip, self.steps, self.min_rows = out, skip, steps, min_rows
        self.seen = 0
        self.started = 0.0
        self.profiler = None
        self.records: list[dict] = []
        self.done = False

    def step(self, batch, launch):
        if self.done or (self.profiler is None and len(batch) < self.min_rows):
            return launch()
        if self.profiler is None:
            self.seen += 1
            if self.seen <= self.skip:
                return launch()
            self._start()
        begun = time.perf_counter()
        result = launch()
        tokens = [count for _, count in batch]
        self.records.append({"rows": len(batch), "tokens": sum(tokens), "mixed": any(c > 1 for c in tokens),
                             "cpu_ms": (time.perf_counter() - begun) * 1e3})  # fmt: skip
        # Rows fall between waves of a closed loop's requests, so only the count or the clock
        # ends the window (a load that ends first leaves the profiler to the next one's steps).
        if len(self.records) >= self.steps or time.monotonic() - self.started > _WINDOW_S:
            self._finish()
        return result

    def _start(self) -> None:
        import torch
        import torch.profiler as tp

        # CUDA alone: recording every CPU op would slow the launches this looks for stalls in.
        activity = tp.ProfilerActivity.CUDA if torch.cuda.is_available() else tp.ProfilerActivity.CPU
        self.profiler = tp.profile(activities=[activity])
        self.profiler.start()
        self.started = time.monotonic()

    def _finish(self) -> None:
        import torch

        self.done = True
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.profiler.stop()
        self.out.mkdir(parents=True, exist_ok=True)
        self.profiler.export_chrome_trace(str(self.out / f"trace-{os.getpid()}.json"))
        (self.out / f"steps-{os.getpid()}.json").write_text(json.dumps(self.records))


def summarize_folder(folder: Path) -> None:
    """Summarize each raw trace in `folder` (with its steps file) into trace-<pid>.txt, and pack it."""
    for raw in sorted(folder.glob("trace-*.json")):
        events = json.loads(raw.read_text())
        steps_file = raw.with_name(raw.name.replace("trace-", "steps-"))
        steps = json.loads(steps_file.read_text()) if steps_file.exists() else None
        text = summarize(events, steps)
        raw.with_suffix(".txt").write_text(text + "\n")
        print(f"{raw}:\n{text}", flush=True)
        with gzip.open(f"{raw}.gz", "wt") as packed:
            json.dump(events, packed)
        raw.unlink()


def summarize(trace: dict, steps: list[dict] | None = None) -> str:
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e]
    gpu = sorted((e for e in events if e.get("cat") in _GPU_CATEGORIES), key=lambda e: e["ts"])
    if not gpu:
        return "trace: no GPU activity recorded"
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}  # fmt: skip
    start, end = gpu[0]["ts"], max(e["ts"] + e["dur"] for e in gpu)
    busy, gaps, covered = 0.0, [], start
    previous = None
    for e in gpu:
        if e["ts"] > covered:
            gap = e["ts"] - covered
            if previous is not None and gap >= _GAP_US:
                launch = launches.get(e.get("args", {}).get("correlation"))
                lag = e["ts"] - (launch["ts"] + launch["dur"]) if launch else None  # launch done -> start
                launched_late = launch is not None and launch["ts"] + launch["dur"] > covered  # after the GPU ran dry
                gaps.append((gap, previous["name"], e["name"], launched_late, lag))
            busy += e["dur"]
            covered = e["ts"] + e["dur"]
        elif e["ts"] + e["dur"] > covered:
            busy += e["ts"] + e["dur"] - covered
            covered = e["ts"] + e["dur"]
        if previous is None or e["ts"] + e["dur"] >= previous["ts"] + previous["dur"]:
            previous = e
    span = end - start
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    streams: dict[object, float] = defaultdict(float)
    for e in gpu:
        entry = by_name[_short(e["name"])]
        entry[0] += e["dur"]
        entry[1] += 1
        streams[e.get("args", {}).get("stream", e.get("tid"))] += e["dur"]
    idle = span - busy
    late_us = sum(g[0] for g in gaps if g[3])
    lines = [
        f"window: {span / 1e3:.1f} ms of GPU time, busy {busy / 1e3:.1f} ms ({busy / span:.1%}), "
        f"idle {idle / 1e3:.1f} ms; gaps >= {_GAP_US:g} us: {len(gaps)}, {sum(g[0] for g in gaps) / 1e3:.1f} ms, "
        f"of them after a late launch (CPU behind) {late_us / 1e3:.1f} ms",
        "kernel time by stream (ms): " + ", ".join(f"{s}: {t / 1e3:.1f}" for s, t in sorted(streams.items(), key=lambda x: -x[1])),
    ]
    if steps:
        mixed = [s for s in steps if s["mixed"]]
        decode = [s for s in steps if not s["mixed"]]
        tokens = sum(s["tokens"] for s in steps)
        lines.append(f"steps: {len(steps)} ({len(mixed)} mixed), {tokens} tokens, {sum(s['rows'] for s in steps) / len(steps):.1f} rows a step; "
                     f"CPU to launch a step (ms): mixed {_mean(s['cpu_ms'] for s in mixed)}, decode {_mean(s['cpu_ms'] for s in decode)}; "
                     f"GPU busy per token {busy / max(tokens, 1):.2f} us")  # fmt: skip
    lines.append("largest gaps (us, kernel before -> after, late launch?, launch-to-start us):")
    for gap, before, after, was_late, lag in sorted(gaps, reverse=True)[:12]:
        lag_text = f"{lag:.0f}" if lag is not None else "-"
        lines.append(f"  {gap:8.0f}  {_short(before)} -> {_short(after)}  {'late' if was_late else 'early'}  {lag_text}")
    lines.append("kernel time (ms, calls):")
    for name, (total, calls) in sorted(by_name.items(), key=lambda x: -x[1][0])[:16]:
        lines.append(f"  {total / 1e3:9.2f} {calls:6d}  {name}")
    return "\n".join(lines)


def _short(name: str) -> str:
    return name if len(name) <= 70 else name[:67] + "..."


def _mean(values) -> str:
    values = list(values)
    return f"{sum(values) / len(values):.1f}" if values else "-"


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        if Path(argument).is_dir():
            summarize_folder(Path(argument))
        else:
            with gzip.open(argument, "rt") if argument.endswith(".gz") else open(argument) as source:
                print(summarize(json.load(source)))
