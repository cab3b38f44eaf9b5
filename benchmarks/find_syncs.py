"""List the places where the engine makes the CPU wait for the GPU, while serving.

    python benchmarks/find_syncs.py [--model DIR]

The engine queues step N+1 before it reads step N's tokens; any other wait (a blocking copy,
`.item()`, a Python `if` on a GPU tensor) stalls that pipeline. PyTorch's sync debug mode warns
at each one; this prints them by call site, with counts, for a few W1 and W2 requests served
together (after a warm-up, so start-up's own syncs are left out). Only the read-back of each
step's tokens should remain (an event wait, which the debug mode does not count).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
import traceback
import warnings
from pathlib import Path

import torch

from flashsight.engine.config import EngineConfig
from flashsight.engine.engine import Engine
from flashsight.engine.testmodel import write_test_model
from benchmarks.inprocess import one_request, request

ROOT = str(Path(__file__).resolve().parents[1])
PENALTY = 1.1  # the checkpoint's default, which HTTP requests get (with min_tokens, as `request` sets)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    args = parser.parse_args()
    model = args.model or write_test_model(tempfile.mkdtemp(), size="full")
    engine = Engine(EngineConfig(model=str(model)))
    asyncio.run(one_request(engine, request("W1", 1, PENALTY)))
    asyncio.run(one_request(engine, request("W2", 2, PENALTY)))
    sites: collections.Counter[str] = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(ROOT) and "benchmarks" not in f.filename]
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames[-3:]))
        sites[f"{str(message)[:60]} at {where or filename + ':' + str(lineno)}"] += 1

    warnings.showwarning = record
    warnings.simplefilter("always")
    torch.cuda.set_sync_debug_mode("warn")

    async def served():
        chats = [request("W1", 10 + i, PENALTY) for i in range(4)] + [request("W2", 20 + i, PENALTY) for i in range(8)]
        await asyncio.gather(*(one_request(engine, chat) for chat in chats))

    asyncio.run(served())
    torch.cuda.set_sync_debug_mode("default")
    print(f"{sum(sites.values())} synchronizing calls while serving 12 requests:")
    for site, count in sites.most_common():
        print(f"{count:6d}  {site}")
    asyncio.run(engine.shutdown())


if __name__ == "__main__":
    main()
