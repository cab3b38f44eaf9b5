"""Can a W1 prompt's prefill and the decode steps run at once on one GPU, and gain? (GPU only)

W1 c100 pays ~1.15 decode-only steps a request (~9.5 ms each at ~95 rows, bound by reading the
weights and the cache) on top of the prompt's ~62 ms of matrix work. If the decode steps ran on
a second stream while prompts are prefilled, the memory-bound steps could hide under the
compute-bound prefill. This measures how much of the decode time hides, before any engine work:

    python benchmarks/overlap.py [--rows 95] [--context 1450] [--prompts 6] [--repeats 2]

The decode step is the engine's own captured graph (rows at one context, as decode_step.py
fills it); the prefill is the engine's model on one 1024x1024 image's patches and a 1394-token
prompt (its attention over the step's own keys, stored in pages the decode rows never read).
Each variant launches the same work (P prefills; R decode replays, R chosen so the decode work
is a fraction of the prefill work) and reports the wall time against the two done one after the
other: the share of the decode time hidden. Variants: one stream; two streams; two streams with
the decode stream at high priority; the same with the prefill's products held to fewer
multiprocessors through cuBLASLt's SM count target (PyTorch's experimental carveout), if this
PyTorch has it.

Run 79 (H100, BENCHMARKS.md): at most ~20% of the decode time hid, the decode steps stretching
from 9.4 ms to 23-34 ms; not worth a two-stream engine.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from flashsight.engine.config import EngineConfig
from flashsight.engine.engine import Engine
from flashsight.engine.kernels import linear
from flashsight.engine.paged_attention import BatchAttention, SeqSlice
from flashsight.engine.testmodel import write_test_model


class Prefill:
    """One W1 prompt through the engine's model: its image through the vision tower, the text
    with the image's rows, attention over its own keys, the last row's logits."""

    def __init__(self, runner, first_page: int, tokens: int = 1394, grid=(1, 74, 74)):
        self.runner, self.model, device = runner, runner.model, runner.device
        vision = runner.ckpt.config.vision_config
        width = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        self.pixels = torch.randn(grid[0] * grid[1] * grid[2], width, device=device)
        self.grid = grid
        image_rows = grid[1] * grid[2] // vision.spatial_merge_size**2
        self.image_rows = slice(12, 12 + image_rows)
        self.ids = torch.randint(0, 1000, (tokens,), device=device)
        self.positions = torch.arange(tokens, device=device).expand(3, tokens).contiguous()
        page = runner.cache.block_size
        self.slots = torch.arange(first_page * page, first_page * page + tokens, device=device)
        self.tokens = tokens

    @torch.inference_mode()
    def __call__(self) -> torch.Tensor:
        embeds = self.model.encode_images(self.pixels, [self.grid])[0]
        x = self.model.embed(self.ids, [])
        x[self.image_rows] = embeds.to(x.dtype)
        ops = self.model.model.language_model.ops
        attention = BatchAttention(self.runner.cache, self.slots, [SeqSlice(0, self.tokens, self.slots)], None, ops)
        hidden = self.model(x, self.positions, attention.attend)
        return self.model.logits(hidden[-1:])


def timed(launch) -> float:
    """Wall ms of launching `launch` and waiting for the whole GPU."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    launch()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def run_variant(name: str, prefill: Prefill, graph, prompts: int, replays: int, carveout: int | None):
    """Launch `prompts` prefills and `replays` decode replays as the variant says. Returns the
    wall ms and, with two streams, the ms at which each stream's last work ended."""
    if name == "one stream":
        def launch():
            per = replays // prompts
            for i in range(prompts):
                prefill()
                for _ in range(per + (i < replays % prompts)):
                    graph.replay()
        return timed(launch), None
    decode_stream = torch.cuda.Stream(priority=-1 if name != "two streams" else 0)
    prefill_stream = torch.cuda.Stream()
    begin, decode_end, prefill_end = (torch.cuda.Event(enable_timing=True) for _ in range(3))

    def launch():
        begin.record()
        decode_stream.wait_event(begin)
        prefill_stream.wait_event(begin)
        # The decode replays go first (a graph replay is one cheap launch), so they run from the
        # start while the CPU is still launching the prefills' kernels one by one.
        with torch.cuda.stream(decode_stream):
            for _ in range(replays):
                graph.replay()
            decode_end.record()
        previous = None
        if carveout is not None:
            previous = torch._C._get_sm_carveout_experimental()
            torch._C._set_sm_carveout_experimental(carveout)
        try:
            with torch.cuda.stream(prefill_stream):
                for _ in range(prompts):
                    prefill()
                prefill_end.record()
        finally:
            if carveout is not None:
                torch._C._set_sm_carveout_experimental(previous)
    wall = timed(launch)
    return wall, (begin.elapsed_time(decode_end), begin.elapsed_time(prefill_end))


def main() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from decode_step import fill, replay_ms

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=95)
    parser.add_argument("--context", type=int, default=1450)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.2, 0.6],
                        help="decode work as a share of the prefill work")
    parser.add_argument("--carveouts", type=int, nargs="*", default=[16, 32])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model = write_test_model(tempfile.mkdtemp(), size="full")
    engine = Engine(EngineConfig(model=str(model)))
    runner = engine.runner.decoder
    bucket = runner._bucket(args.rows)
    graph, _ = runner.graphs[bucket]
    fill(runner, args.rows, bucket, args.context)
    pages = -(-args.context // runner.cache.block_size)
    prefill = Prefill(engine.runner, first_page=args.rows * pages + 8)
    for _ in range(3):
        prefill()
    torch.cuda.synchronize()
    decode_ms = min(replay_ms(graph) for _ in range(3))
    prefill_ms = min(timed(lambda: [prefill() for _ in range(args.prompts)]) for _ in range(3)) / args.prompts
    print(f"{torch.cuda.get_device_name()}: decode step ({args.rows} rows of {bucket}, context {args.context}) "
          f"{decode_ms:.2f} ms; W1 prefill {prefill_ms:.2f} ms")  # fmt: skip
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    has_carveout = hasattr(torch._C, "_set_sm_carveout_experimental")
    variants = [("one stream", None), ("two streams", None), ("decode first", None)]
    if has_carveout:
        variants += [("decode first", k) for k in args.carveouts]
    else:
        print("no SM carveout in this PyTorch")
    for share in args.shares:
        replays = max(1, round(share * args.prompts * prefill_ms / decode_ms))
        serial = args.prompts * prefill_ms + replays * decode_ms
        print(f"share {share}: {args.prompts} prefills + {replays} decode steps, one after the other {serial:.1f} ms")
        for repeat in range(args.repeats):
            for name, carveout in variants:
                by_shape = linear.library_for
                if carveout is not None:  # the carveout reaches cuBLASLt only
                    linear.library_for = lambda weight: "cublaslt"
                try:
                    wall, ends = run_variant(name, prefill, graph, args.prompts, replays, carveout)
                finally:
                    linear.library_for = by_shape
                hidden = (serial - wall) / (replays * decode_ms)
                label = name + (f", prefill products on {sms - carveout} SMs" if carveout else "")
                streams = f"  decode steps {ends[0] / replays:.2f} ms each, prefills end at {ends[1]:.0f}" if ends else ""
                print(f"  [{repeat}] {label:45s} {wall:8.1f} ms  decode hidden {hidden:+.0%}{streams}")


if __name__ == "__main__":
    main()
