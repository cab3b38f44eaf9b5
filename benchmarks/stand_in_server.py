"""What the load generator itself adds: `flashsight bench` against a model-free stand-in server.

    python3 benchmarks/stand_in_server.py [--workload W2] [--concurrency 100] [--requests 300]
                                          [--first-s 1.0] [--gap-s 0.02]

The stand-in (Starlette on uvicorn, in its own process, as flashsight's server is) reads each
chat request's body, waits --first-s, then streams the workload's output tokens --gap-s apart in
OpenAI's chunk shape, with usage and [DONE]. Every request would take first-s + tokens x gap-s on
an ideal client and server; the bench's TTFT and end-to-end above that are what HTTP and the
client cost at this concurrency, on this machine. Prints both, and the CPU each process used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from process_cpu import busy_line, thread_cpu

ROOT = Path(__file__).resolve().parents[1]


def app():
    """The stand-in's ASGI app (imported by uvicorn in the server process)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    first_s, gap_s = float(os.environ["STAND_IN_FIRST_S"]), float(os.environ["STAND_IN_GAP_S"])

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "stand-in", "object": "model"}]})

    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        tokens = int(body.get("max_tokens") or 16)

        async def events():
            await asyncio.sleep(first_s)
            for index in range(tokens):
                delta = {"index": 0, "delta": {"content": f"word{index} "}, "finish_reason": None}
                yield f"data: {json.dumps({'id': 'c', 'object': 'chat.completion.chunk', 'choices': [delta]})}\n\n"
                await asyncio.sleep(gap_s)
            usage = {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1}
            yield f"data: {json.dumps({'id': 'c', 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="W2")
    parser.add_argument("--concurrency", default="100")
    parser.add_argument("--requests", default="300")
    parser.add_argument("--first-s", type=float, default=1.0)
    parser.add_argument("--gap-s", type=float, default=0.02)
    parser.add_argument("--port", type=int, default=8124)
    args = parser.parse_args()
    env = os.environ | {"STAND_IN_FIRST_S": str(args.first_s), "STAND_IN_GAP_S": str(args.gap_s),
                        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "stand_in_server:app", "--factory", "--port", str(args.port),
                               "--log-level", "warning", "--no-access-log"], env=env)  # fmt: skip
    try:
        time.sleep(3.0)  # uvicorn and Starlette import
        before, began = thread_cpu(server.pid), time.monotonic()
        with tempfile.TemporaryDirectory() as folder:
            report = Path(folder) / "bench.json"
            command = [sys.executable, "-m", "flashsight.cli", "bench", "--base-url", f"http://127.0.0.1:{args.port}/v1",
                       "--workload", args.workload, "--concurrency", args.concurrency, "--requests", args.requests,
                       "--json", str(report)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            wall = time.monotonic() - began
            if done.returncode:
                print(done.stdout + done.stderr)
                return 1
            data = json.loads(report.read_text())
        level = data["levels"][0]
        ok = [r for r in level["per_request"] if r["ok"]]
        tokens = data["settings"]["workload"]["output_tokens"]
        ideal_e2e = args.first_s + tokens * args.gap_s
        ttft, e2e = statistics.fmean(r["ttft_s"] for r in ok), statistics.fmean(r["e2e_s"] for r in ok)
        print(f"{args.workload} c{args.concurrency}: {level['requests_per_s']:.2f} req/s; mean TTFT {ttft:.3f} s "
              f"(ideal {args.first_s:.3f}, +{(ttft - args.first_s) * 1e3:.0f} ms), mean e2e {e2e:.3f} s "
              f"(ideal {ideal_e2e:.3f}, +{(e2e - ideal_e2e) * 1e3:.0f} ms)")  # fmt: skip
        print(busy_line("stand-in server", before, thread_cpu(server.pid), wall))
        return 0
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
