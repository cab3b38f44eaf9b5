"""`flashsight serve` measured over HTTP by `flashsight bench`, the way a user (or the anchors' vLLM
runs) sees it: the server in one process (the engine in its child), the load generator in another,
over loopback.

    python3 benchmarks/serve_bench.py --model /tmp/ab-model --out /tmp/out \
        --runs W1:1 W1-repeat:1 W2:1 W1:100 W2:100 [-- extra serve arguments]

Prints the time from launch to `GET /ready`, then each level's table and the CPU each process
used during it (per second of wall time, with its busiest threads: a thread near 1.00 is
saturated); writes each level's JSON, the engine's `GET /v1/status` after it, and the server's log
under --out. A run may name its request count (`W2:100:600`). `--py-spy S` records S seconds of
the server, the engine process and the load generator (py-spy, raw folded stacks per thread)
during each level above concurrency 1, starting `--py-spy-delay` seconds after the load does
(when the engine first holds more than one request: the load generator builds its requests
first, which takes seconds for W1's photos). Exits non-zero as soon as the server dies or never gets ready,
so a broken install costs seconds, not the readiness timeout.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from process_cpu import busy_line, thread_cpu


DATA_DIR = Path("/tmp/fs-data")  # the server's: its audit log has each request's own TTFT


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", type=Path, default=Path("/tmp/out"))
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--runs", nargs="+", default=["W1:1", "W1-repeat:1", "W2:1", "W1:100", "W2:100"],
                        help="workload:concurrency[:requests], in order")  # fmt: skip
    parser.add_argument("--py-spy", type=float, default=0.0, metavar="S", help="profile loaded levels for S seconds")
    parser.add_argument("--py-spy-delay", type=float, default=2.0, metavar="S", help="after the load starts")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("serve_args", nargs=argparse.REMAINDER, help="after --: more `flashsight serve` arguments")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    extra = [a for a in args.serve_args if a != "--"]
    log_path = args.out / "server.log"
    command = [sys.executable, "-m", "flashsight.cli", "serve", "--model", args.model, "--port", str(args.port),
               "--data-dir", str(DATA_DIR), *extra]  # fmt: skip
    started = time.monotonic()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            if not wait_ready(server, args.port, args.ready_timeout):
                print(f"serve: not ready (exit status {server.poll()}); the end of its log:", flush=True)
                print("\n".join(log_path.read_text(errors="replace").splitlines()[-30:]), flush=True)
                return 1
            print(f"serve: ready {time.monotonic() - started:.1f} s after launch", flush=True)
            failed = 0
            snapshot = status(args.port) or {}
            engine_pid = snapshot.get("engine", {}).get("engine_pid")
            counters = engine_counters(args.port, snapshot)
            for run in args.runs:
                workload, concurrency, *requests = run.split(":")
                name = f"http-{workload}-c{concurrency}"
                pids = {"server": server.pid, "engine": engine_pid}
                before = {label: thread_cpu(pid) for label, pid in pids.items() if pid}
                client_before, began = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
                profile = args.py_spy if int(concurrency) > 1 else 0.0
                failed |= bench(args.port, workload, concurrency, requests, args.out, name, pids, profile, args.py_spy_delay)
                wall = time.monotonic() - began
                client = resource.getrusage(resource.RUSAGE_CHILDREN)
                used = client.ru_utime + client.ru_stime - client_before.ru_utime - client_before.ru_stime
                lines = [busy_line(label, before[label], thread_cpu(pid), wall) for label, pid in pids.items() if pid]
                print(f"cpu over {wall:.1f} s: " + "; ".join(lines) + f"; load generator {used / wall:.2f} CPU/s", flush=True)
                snapshot = status(args.port) or {}
                (args.out / f"{name}-status.json").write_text(json.dumps(snapshot, indent=1))  # beside in-process figures
                counters, previous = engine_counters(args.port, snapshot), counters
                print(batching_line(previous, counters), flush=True)
                if server.poll() is not None:
                    print(f"serve: exited during {run} (status {server.returncode})", flush=True)
                    return 1
            return failed
        finally:
            stop(server)
            errors = [line for line in log_path.read_text(errors="replace").splitlines() if "Traceback" in line or "ERROR" in line]
            print(f"server log: {len(errors)} error lines" + (f"; first: {errors[0]}" if errors else ""), flush=True)


def wait_ready(server: subprocess.Popen, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2):
                return True
        except OSError:  # refused while starting, or 503 until the model is loaded
            time.sleep(0.5)
    return False


def bench(port: int, workload: str, concurrency: str, requests: list[str], out: Path, name: str,
          pids: dict, profile_s: float, delay_s: float) -> int:  # fmt: skip
    command = [sys.executable, "-m", "flashsight.cli", "bench", "--base-url", f"http://127.0.0.1:{port}/v1",
               "--workload", workload, "--concurrency", concurrency, "--json", str(out / f"{name}.json")]  # fmt: skip
    command += ["--requests", requests[0]] if requests else []
    with open(out / f"{name}.log", "w") as log:
        client = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        if profile_s and wait_for_load(port, client):
            time.sleep(delay_s)
            profile(pids | {"client": client.pid}, profile_s, out, name)
        client.wait()
    text = (out / f"{name}.log").read_text()
    print(text.rstrip(), flush=True)
    if concurrency == "1":
        print(f"TTFT of each request in order, warm-up first (ms): {each_ttft(out / f'{name}.json')}", flush=True)
        print(f"  the server's own (to its first token, with or without text): {server_ttfts(out / f'{name}.json')}",
              flush=True)  # fmt: skip
    if client.returncode:
        print(f"bench exit status {client.returncode}", flush=True)
    return client.returncode


def each_ttft(path: Path) -> str:
    """The warm-up's and each counted request's TTFT, in the order sent: whether a level's first
    requests are slower than its last, or a few of any."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return "no report"
    values = [report["warmup"].get("ttft_s")] + [r.get("ttft_s") for lv in report["levels"]
                                                  for r in sorted(lv["per_request"], key=lambda r: r["index"])]
    return " ".join("-" if v is None else f"{v * 1e3:.0f}" for v in values)


def server_ttfts(path: Path) -> str:
    """The same requests' TTFTs as the server's audit log has them. The client's count to the
    first token with text; a random-weight model's first tokens are often pieces of a UTF-8
    character with none (session 17), which adds a decode step or more on the client's side."""
    try:
        sent = 1 + sum(len(lv["per_request"]) for lv in json.loads(path.read_text())["levels"])
        time.sleep(0.5)  # the last request's record is written once its response has ended
        shown = subprocess.run([sys.executable, "-m", "flashsight.cli", "logs", "show", "--dir", str(DATA_DIR / "audit")],
                               capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        return "not read"
    # One record a line; split on newlines only: str.splitlines also splits at U+2028, U+0085
    # and the like, which a random-weight model's text holds raw in a record now and then.
    records = [json.loads(line) for line in shown.split("\n") if line.strip()]
    ttfts = [r["ttft_s"] for r in records if r.get("kind") == "request" and "ttft_s" in r][-sent:]
    return " ".join(f"{v * 1e3:.0f}" for v in ttfts)


def wait_for_load(port: int, client: subprocess.Popen, timeout_s: float = 120.0) -> bool:
    """Until the engine holds more than one request (the warm-up is one), or the client exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and client.poll() is None:
        engine = (status(port) or {}).get("engine") or {}
        if engine.get("running_requests", 0) + engine.get("waiting_requests", 0) > 1:
            return True
        time.sleep(0.2)
    return False


def profile(pids: dict, seconds: float, out: Path, name: str) -> None:
    """py-spy on each process at once, without pausing them (--nonblocking)."""
    spy = shutil.which("py-spy") or "/tmp/site/bin/py-spy"
    running = [subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
                                 "--threads", "--nonblocking", "--format", "raw", "-o", str(out / f"{name}-{label}.folded")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for label, pid in pids.items() if pid]  # fmt: skip
    for spying in running:
        _, errors = spying.communicate()
        if spying.returncode:
            print(f"py-spy failed: {errors.strip().splitlines()[-1:]}", flush=True)


def status(port: int) -> dict | None:
    """The engine's statistics (steps, preemptions, caches, GPU memory, its process id)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=10) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:
        print(f"status: not read ({exc})", flush=True)
        return None


def engine_counters(port: int, snapshot: dict) -> dict[str, float]:
    """The engine's step counters (from `snapshot`, a /v1/status answer) and the server's own sums
    and counts of TTFT, its stages and request time (/metrics): subtracted between levels, what
    one level did."""
    found = {key: float(value) for key, value in (snapshot.get("engine") or {}).items()
             if key in ("steps", "mixed_steps", "batched_rows", "prompt_tokens_computed", "finished_requests",
                        "gpu_busy_s", "gpu_mixed_s", "gpu_wait_s", "launch_s", "launch_mixed_s")}  # fmt: skip
    memory = (snapshot.get("engine") or {}).get("gpu_memory") or {}
    if "allocator_retries" in memory:
        found["allocator_retries"] = float(memory["allocator_retries"])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError as exc:
        print(f"metrics: not read ({exc})", flush=True)
        return found
    for name in ("time_to_first_token", "request_duration", "event_loop_lag", "audit_write"):
        for part in ("sum", "count"):
            match = re.search(rf"^flashsight_{name}_seconds_{part} (\S+)$", text, re.MULTILINE)
            if match:
                found[f"{name}_{part}"] = float(match.group(1))
    for name in ("audit_records", "audit_commits"):
        match = re.search(rf"^flashsight_{name}_total (\S+)$", text, re.MULTILINE)
        if match:
            found[name] = float(match.group(1))
    for part, phase, value in re.findall(r'^flashsight_time_to_first_token_phase_seconds_(sum|count){phase="(\w+)"} (\S+)$',
                                         text, re.MULTILINE):  # fmt: skip
        found[f"phase {phase}_{part}"] = float(value)
    return found


def batching_line(before: dict[str, float], after: dict[str, float]) -> str:
    """'engine: 148 steps (24 mixed, ...), 65.2 rows a step; server means: TTFT 1511 ms (receive 4,
    handoff 12, ...), request 2100 ms': the server's own view, to set beside the client's."""
    d = {key: after[key] - before.get(key, 0.0) for key in after}
    steps = d.get("steps", 0.0)
    line = f"engine: {steps:.0f} steps ({d.get('mixed_steps', 0):.0f} mixed, {d.get('prompt_tokens_computed', 0):.0f} prompt tokens)"
    line += f", {d.get('batched_rows', 0) / steps:.1f} rows a step" if steps else ""
    if "gpu_busy_s" in d:
        line += (f"; GPU on steps {d['gpu_busy_s']:.2f} s ({d.get('gpu_mixed_s', 0):.2f} s mixed), waiting for the engine"
                 f" between them {d.get('gpu_wait_s', 0):.2f} s")
    if "launch_s" in d:
        line += f"; the engine thread queueing them {d['launch_s']:.2f} s ({d.get('launch_mixed_s', 0):.2f} s mixed)"
    if "allocator_retries" in d:
        line += f"; allocator retries {d['allocator_retries']:.0f}"

    def mean_ms(name: str) -> str:
        if not d.get(f"{name}_count"):
            return "-"
        value = d[f"{name}_sum"] / d[f"{name}_count"] * 1e3
        return f"{value:.1f}" if value < 10 else f"{value:.0f}"

    phases = [key.removesuffix("_count") for key in d if key.startswith("phase ") and key.endswith("_count")]
    parts = ", ".join(f"{name.removeprefix('phase ')} {mean_ms(name)}" for name in phases)
    line += f"; server means (ms): TTFT {mean_ms('time_to_first_token')} ({parts}), request {mean_ms('request_duration')}"
    line += f", event-loop lag {mean_ms('event_loop_lag')}, audit write {mean_ms('audit_write')}"
    if d.get("audit_commits"):
        line += f" ({d['audit_records'] / d['audit_commits']:.1f} records a commit)"
    return line


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(2)  # SIGINT: the server's own orderly shutdown
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
