"""A request's way to the engine process and back, without the engine: `wire.send` of a generate
message carrying one photo's pixels (a W1 picture, 1024x1024 RGB: 3 MB) to a spawned process that
`wire.receive`s it and answers one byte, timed round trip by round trip.

    python3 benchmarks/wire_roundtrip.py [--size 1024] [--repeats 40]

The handoff stage of a served request's first token includes this (BENCHMARKS.md, session 16).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import numpy as np

from flashsight.engine.types import ChatRequest, Picture, SamplingParams
from flashsight.ops import wire


def answer(conn, ack, keep: int) -> None:
    """Receive until "stop", answering each message; the last `keep` stay alive, as requests in
    flight hold their pictures (how long a picture's memory lives changes what allocating the
    next one costs)."""
    held: list = []
    while (message := wire.receive(conn)) != ("stop",):
        held = [*held, message][-keep:] if keep else []
        del message  # with keep 0, freed here, before the answer
        ack.send_bytes(b"k")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1024, help="the square picture's side")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--keep", type=int, nargs="+", default=[0, 1, 8], help="messages the receiver holds")
    args = parser.parse_args()
    pixels = np.random.default_rng(1).integers(0, 256, args.size * args.size * 3, dtype=np.uint8).tobytes()
    content = [{"type": "image", "image": Picture(args.size, args.size, pixels)}, {"type": "text", "text": "hi"}]
    request = ChatRequest("wire", [{"role": "user", "content": content}], SamplingParams(max_tokens=1))
    spawn = multiprocessing.get_context("spawn")
    for keep in args.keep:
        ours, theirs = spawn.Pipe()
        ack_in, ack_out = spawn.Pipe()
        process = spawn.Process(target=answer, args=(theirs, ack_out, keep))
        process.start()
        times = []
        for _ in range(args.repeats + 5):
            start = time.perf_counter()
            wire.send(ours, ("generate", 1, request))
            ack_in.recv_bytes()
            times.append((time.perf_counter() - start) * 1e3)
        wire.send(ours, ("stop",))
        process.join()
        print(f"{len(pixels) / 2**20:.1f} MB picture, {keep} held: round trip median {statistics.median(times[5:]):.2f} ms, "
              f"p90 {statistics.quantiles(times[5:], n=10)[-1]:.2f} ms over {args.repeats}")  # fmt: skip


if __name__ == "__main__":
    main()
