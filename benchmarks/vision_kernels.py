"""Where the vision tower's GPU time goes: W1's images (1024x1024, 74x74 patches) through the
engine's tower, several in one call as a mixed step batches them, its kernels tabled per image
(GPU only).

    python benchmarks/vision_kernels.py [--images 5] [--top 25]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile

import torch
import torch.profiler as tp

from flashsight.engine.config import EngineConfig
from flashsight.engine.engine import Engine
from flashsight.engine.testmodel import write_test_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = write_test_model(tempfile.mkdtemp(), size="full")
    engine = Engine(EngineConfig(model=str(model)))
    glm, device = engine.runner.model, engine.runner.device
    vision = engine.runner.ckpt.config.vision_config
    width = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    grids = [(1, 74, 74)] * args.images
    pixels = torch.randn(74 * 74 * args.images, width, device=device)
    with torch.inference_mode():
        for _ in range(3):
            glm.encode_images(pixels, grids)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(args.repeats):
            glm.encode_images(pixels, grids)
        end.record()
        torch.cuda.synchronize()
        per_image = start.elapsed_time(end) / args.repeats / args.images
        with tp.profile(activities=[tp.ProfilerActivity.CUDA]) as prof:
            for _ in range(args.repeats):
                glm.encode_images(pixels, grids)
            torch.cuda.synchronize()
    rows = [e for e in prof.key_averages() if e.device_time_total > 0]
    rows.sort(key=lambda e: -e.device_time_total)
    calls = args.repeats * args.images
    total = sum(e.device_time_total for e in rows) / calls
    print(f"{torch.cuda.get_device_name()}: {args.images} images a call, {per_image:.2f} ms an image (events), "
          f"kernels {total / 1e3:.2f} ms an image")  # fmt: skip
    for e in rows[: args.top]:
        print(f"  {e.device_time_total / calls:8.1f} us an image {e.count // args.repeats:5d} launches a call  {e.key[:90]}")
    asyncio.run(engine.shutdown())


if __name__ == "__main__":
    main()
