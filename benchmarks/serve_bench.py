"""`flashsight serve` measured over HTTP by `flashsight bench`, the way a user (or the anchors' vLLM
runs) sees it: the server in one process (the engine in its child), the load generator in another,
over loopback.

    python3 benchmarks/serve_bench.py --model /tmp/ab-model --out /tmp/out \
        --runs W1:1 W1-repeat:1 W2:1 W1:100 W2:100 [-- extra serve arguments]

Prints the time from launch to `GET /ready`, then each level's table; writes each level's JSON,
the engine's `GET /v1/status` after it, and the server's log under --out. Exits non-zero as soon as the server dies or never gets ready,
so a broken install costs seconds, not the readiness timeout.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", type=Path, default=Path("/tmp/out"))
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--runs", nargs="+", default=["W1:1", "W1-repeat:1", "W2:1", "W1:100", "W2:100"],
                        help="workload:concurrency, in order")  # fmt: skip
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("serve_args", nargs=argparse.REMAINDER, help="after --: more `flashsight serve` arguments")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    extra = [a for a in args.serve_args if a != "--"]
    log_path = args.out / "server.log"
    command = [sys.executable, "-m", "flashsight.cli", "serve", "--model", args.model, "--port", str(args.port),
               "--data-dir", "/tmp/fs-data", *extra]  # fmt: skip
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
            for run in args.runs:
                workload, concurrency = run.split(":")
                failed |= bench(args.port, workload, concurrency, args.out)
                save_status(args.port, args.out / f"http-{workload}-c{concurrency}-status.json")
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


def bench(port: int, workload: str, concurrency: str, out: Path) -> int:
    name = f"http-{workload}-c{concurrency}"
    command = [sys.executable, "-m", "flashsight.cli", "bench", "--base-url", f"http://127.0.0.1:{port}/v1",
               "--workload", workload, "--concurrency", concurrency, "--json", str(out / f"{name}.json")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    (out / f"{name}.log").write_text(result.stdout + result.stderr)
    print(result.stdout.rstrip(), flush=True)
    if result.returncode:
        print(f"bench exit status {result.returncode}: {result.stderr.strip().splitlines()[-1:]}", flush=True)
    return result.returncode


def save_status(port: int, path: Path) -> None:
    """The engine's statistics after a level (steps, preemptions, caches, GPU memory), to read the
    level beside the in-process benchmark's."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=10) as response:
            path.write_bytes(response.read())
    except OSError as exc:
        print(f"status: not saved ({exc})", flush=True)


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
