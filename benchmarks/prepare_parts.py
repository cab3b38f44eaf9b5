"""Where a prompt's preparation goes: the engine's PromptBuilder on one W1 photo and one W2
screenshot, timed whole and part by part, then W2 prompts built by several threads at once, and
what those threads cost a thread launching small kernels meanwhile (the engine thread's lot).

    python benchmarks/prepare_parts.py [--model DIR] [--repeats 20] [--threads 1 4] [--launches 800]

Over HTTP, the prepare stage of W1 c1's first token was 15-23 ms on the device (BENCHMARKS.md),
against ~70 ms of prefill: this says which part of it is the processor, the copy, the hash or
the tokenizer. The launch figures test session 12's suspect for the slower mixed steps over
HTTP: each kernel launch releases the GIL, and a preparing thread that takes it holds the
launching thread back. They showed it on the H100 (session 14), which is why the engine now
builds prompts on its own thread. Only the processor and tokenizer are loaded (no weights), on
the GPU when there is one. Images are the bench's own (flashsight.bench.images), decoded as the server decodes them.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image
from transformers import AutoConfig, AutoProcessor

from flashsight.bench.images import photo_jpeg
from flashsight.engine.model.positions import prompt_positions
from flashsight.engine.prompt import PromptBuilder, image_hash, image_spans, split_images
from flashsight.engine.testmodel import write_test_model
from flashsight.engine.types import Picture

SHAPES = {"W1": (1024, 1024, "Describe this image in detail."), "W2": (640, 480, "What does the error on this screen say?")}


def timed(fn, repeats: int, cuda: bool) -> tuple[float, object]:
    """Median wall ms of fn() (the GPU synchronized after each call), after two warm-up calls."""
    result = None
    for _ in range(2):
        result = fn()
    times = []
    for _ in range(repeats):
        begun = time.perf_counter()
        result = fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - begun) * 1e3)
    return statistics.median(times), result


def messages(workload: str, index: int) -> list[dict]:
    width, height, question = SHAPES[workload]
    image = Image.open(io.BytesIO(photo_jpeg(width, height, 7, index))).convert("RGB")
    return [{"role": "user", "content": [{"type": "image", "image": Picture.of(image)}, {"type": "text", "text": question}]}]


def parts(builder: PromptBuilder, workload: str, repeats: int, cuda: bool) -> dict[str, float]:
    convo = messages(workload, 0)
    template_messages, images = split_images(convo)
    raws = [image.data for image in images]
    out = {"build": timed(lambda: builder.build(convo, {}), repeats, cuda)[0]}
    out["render"], text = timed(lambda: builder.render(template_messages, {}), repeats, cuda)
    out["hash"] = timed(lambda: image_hash(images[0], raws[0]), repeats, cuda)[0]
    if cuda:
        out["upload"] = timed(lambda: builder._upload(images[0], raws[0]), repeats, cuda)[0]
    out["process_images"], (_, grids) = timed(lambda: builder._process_images(images, raws), repeats, cuda)
    out["token_ids"], ids = timed(lambda: builder._token_ids(text, grids), repeats, cuda)
    merge = builder.merge_size
    out["positions"] = timed(lambda: prompt_positions(ids, builder.image_token_id, grids, merge), repeats, cuda)[0]
    out["spans"] = timed(lambda: image_spans(ids, builder.image_token_id), repeats, cuda)[0]
    out["prompt_tokens"] = len(ids)
    return out


def concurrent(builder: PromptBuilder, workload: str, threads: int, count: int) -> dict[str, float]:
    """`count` different prompts built by `threads` threads at once: prompts/s and mean latency."""
    convos = [messages(workload, 1 + i) for i in range(count)]
    latencies: list[float] = []
    lock = threading.Lock()

    def one(convo):
        begun = time.perf_counter()
        builder.build(convo, {})
        with lock:
            latencies.append((time.perf_counter() - begun) * 1e3)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, convos[:threads]))  # warm-up
        latencies.clear()
        begun = time.perf_counter()
        list(pool.map(one, convos))
        wall = time.perf_counter() - begun
    return {"threads": threads, "prompts_s": round(count / wall, 1), "latency_ms_mean": round(statistics.mean(latencies), 2)}


def launches_ms(count: int, rounds: int) -> float:
    """Median wall ms for `count` small, GIL-releasing GPU (or CPU) ops, as a mixed step launches."""
    x = torch.zeros(64, device="cuda" if torch.cuda.is_available() else "cpu")
    times = []
    for _ in range(rounds):
        begun = time.perf_counter()
        for _ in range(count):
            x.add_(1.0)
        times.append((time.perf_counter() - begun) * 1e3)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return round(statistics.median(times), 2)


def launches_beside_prepare(builder: PromptBuilder, count: int, threads: int, prompts: int) -> dict[str, float]:
    """The launch loop timed while `threads` threads build W2 prompts without pause."""
    convos = [messages("W2", 100 + i) for i in range(prompts)]
    stop = threading.Event()

    def keep_building(offset: int) -> None:
        i = offset
        while not stop.is_set():
            builder.build(convos[i % len(convos)], {})
            i += threads

    workers = [threading.Thread(target=keep_building, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(0.2)
    try:
        return {"threads": threads, "switch_ms": sys.getswitchinterval() * 1e3, "launch_ms": launches_ms(count, 30)}
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a checkpoint directory (default: a tiny synthetic one; the processor is the same)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--count", type=int, default=40, help="W2 prompts per concurrent run")
    parser.add_argument("--launches", type=int, default=800, help="small kernels in the launch loop (0: skip it)")
    args = parser.parse_args()
    model = args.model or str(write_test_model(tempfile.mkdtemp(prefix="flashsight-prepare-"), size="tiny"))
    config = AutoConfig.from_pretrained(model)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda") if cuda else None
    builder = PromptBuilder(AutoProcessor.from_pretrained(model), config.image_token_id,
                            config.vision_config.spatial_merge_size, device, torch.bfloat16 if cuda else None)  # fmt: skip
    print(f"prepare parts on {torch.cuda.get_device_name() if cuda else 'the CPU'}, median ms of {args.repeats}")
    for workload in SHAPES:
        print(workload, {k: round(v, 2) for k, v in parts(builder, workload, args.repeats, cuda).items()})
    for threads in args.threads:
        print("W2 concurrent", concurrent(builder, "W2", threads, args.count))
    if args.launches:
        print(f"{args.launches} launches alone", {"launch_ms": launches_ms(args.launches, 30)})
        for switch_ms in (5.0, 0.5):
            sys.setswitchinterval(switch_ms / 1e3)
            for threads in args.threads:
                print(f"{args.launches} launches beside prepare", launches_beside_prepare(builder, args.launches, threads, 8))
        sys.setswitchinterval(0.005)


if __name__ == "__main__":
    main()
