"""`flashsight bench`: the command line of the benchmark client."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from pathlib import Path
from typing import Any

from flashsight.bench.report import TablePrinter, footnotes, write_json
from flashsight.bench.runner import BenchError, BenchReport, BenchSettings, run_benchmark
from flashsight.bench.workloads import WORKLOADS, with_output_tokens

EXIT_OK = 0
EXIT_REQUESTS_FAILED = 1
EXIT_CANNOT_RUN = 2
EXIT_INTERRUPTED = 130

DESCRIPTION = """\
Measure an OpenAI-compatible server (flashsight, vLLM, SGLang, llama-server, Ollama, TGI...) on the
reference workloads behind flashsight's published numbers: W1 (a fresh 1024x1024 JPEG, "Describe this image in detail.", 128 output
tokens), W2 (a fresh 640x480 JPEG and a one-line question, 32 output tokens) and W1-repeat (W1
re-sending an image the server has already seen, concurrency 1 by default). Each level is a closed
loop: CONCURRENCY clients each send their next request when their last one ends, until
max(10, 3 x CONCURRENCY) requests are done, after one uncounted warm-up request. Requests stream,
ask for exactly the output length (max_tokens = min_tokens, ignore_eos: servers that ignore these
show it in the "out tokens" column), and carry photo-like JPEGs made before timing starts.

TTFT is the time to the first generated token of any kind: answer text, or thinking
(reasoning_content) when thinking is on. decode tok/s is per stream: (output tokens - 1) /
(end-to-end - TTFT), the median over the level's requests. Output tokens come from the stream's
usage (stream_options.include_usage), or are counted from chunks when a server sends none."""

EPILOG = """\
exit status: 0 when every request succeeded, 1 when any failed (the table and JSON count them and
show the first error), 2 when the run could not start."""


def add_bench_command(commands: Any) -> None:
    parser = commands.add_parser(
        "bench",
        help="measure an OpenAI-compatible server on the W1 / W2 / W1-repeat workloads",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base-url", required=True, help="the server's API root, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY' (never written to the JSON)")
    parser.add_argument("--model", help="the model id to ask for (default: the first that GET /models lists)")
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--concurrency", type=_positive_int, nargs="+", metavar="C",
                        help="concurrency levels, run in turn (default: 1 8 32 100; W1-repeat: 1)")  # fmt: skip
    parser.add_argument("--requests", type=_positive_int, metavar="N", help="requests per level (default: max(10, 3 x C))")
    parser.add_argument("--json", metavar="PATH", help="also write the settings, environment and results here")
    parser.add_argument("--output-tokens", type=_positive_int, metavar="N",
                        help="override the workload's output length (for quick checks; the anchors use 128 / 32)")  # fmt: skip
    parser.add_argument("--seed", type=int, help="image seed (default: a new one per run, recorded in the JSON, so "
                        "a server's image and prefix caches never see a previous run's images)")  # fmt: skip
    parser.add_argument("--thinking", choices=["off", "on", "omit"], default="off",
                        help="chat_template_kwargs.enable_thinking to send (default: off, so every server answers "
                             "directly and all tokens are answer text; 'omit' sends no "
                             "chat_template_kwargs, for servers that reject the field)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS", help="per request (default: 600)")
    parser.set_defaults(handler=bench)


def bench(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ValueError as exc:
        return _fail(str(exc), EXIT_CANNOT_RUN)
    try:
        report = asyncio.run(_run_and_print(settings))
    except BenchError as exc:
        return _fail(str(exc), EXIT_CANNOT_RUN)
    except KeyboardInterrupt:
        return _fail("interrupted; no report written", EXIT_INTERRUPTED)
    for note in footnotes(report, settings.workload.output_tokens):
        print(f"  {note}")
    if args.json:
        try:
            write_json(report, args.json)
        except OSError as exc:
            return _fail(f"could not write {args.json}: {exc.strerror or exc}", EXIT_CANNOT_RUN)
        print(f"  wrote {args.json}")
    return _exit_status(report)


def settings_from(args: argparse.Namespace) -> BenchSettings:
    if not args.base_url.startswith(("http://", "https://")):
        raise ValueError(f"--base-url must start with http:// or https://, not {args.base_url!r}")
    if args.timeout <= 0:
        raise ValueError("--timeout must be positive")
    if args.json and not Path(args.json).resolve().parent.is_dir():  # found out now, not after the run
        raise ValueError(f"--json {args.json}: its folder does not exist")
    workload = with_output_tokens(WORKLOADS[args.workload], args.output_tokens)
    return BenchSettings(
        base_url=args.base_url,
        workload=workload,
        concurrency=tuple(args.concurrency or workload.default_concurrency),
        seed=args.seed if args.seed is not None else secrets.randbelow(2**31),
        model=args.model,
        api_key=args.api_key,
        requests=args.requests,
        thinking=args.thinking,
        timeout_s=args.timeout,
    )


async def _run_and_print(settings: BenchSettings) -> BenchReport:
    levels = " ".join(map(str, settings.concurrency))
    print(f"flashsight bench: {settings.workload.name} at concurrency {levels}, seed {settings.seed}", flush=True)
    return await run_benchmark(settings, TablePrinter(settings.workload.name, settings.base_url.rstrip("/")))


def _exit_status(report: BenchReport) -> int:
    failed = report.errors + (0 if report.warmup.get("ok") else 1)
    if not failed:
        return EXIT_OK
    total = sum(level["requests"] for level in report.levels) + 1
    first = report.warmup.get("error") or next(lv["first_error"] for lv in report.levels if lv["errors"])
    print(f"flashsight: {failed} of {total} requests failed (warm-up included); first error: {first}", file=sys.stderr)
    return EXIT_REQUESTS_FAILED


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _fail(message: str, status: int) -> int:
    print(f"flashsight: error: {message}", file=sys.stderr)
    return status
