"""The benchmark's outputs: a table for people, a JSON file for records."""

from __future__ import annotations

import json
from pathlib import Path

from flashsight.bench.runner import BenchReport
from flashsight.bench.stats import LevelSummary

COLUMNS = ("conc", "requests", "errors", "TTFT p50", "TTFT p95", "e2e p50", "e2e p95", "req/s", "out tok/s",
           "decode tok/s", "out tokens")  # fmt: skip


class TablePrinter:
    """Prints the table's title and header once the model is known, then a row per level."""

    def __init__(self, workload: str, base_url: str) -> None:
        self.workload = workload
        self.base_url = base_url

    def started(self, model: str) -> None:
        print(f"{self.workload} against {model} at {self.base_url}")
        print(_row(COLUMNS))
        print(_row(tuple("-" * len(name) for name in COLUMNS)), flush=True)

    def level_done(self, level: LevelSummary) -> None:
        print(level_row(level), flush=True)


def level_row(level: LevelSummary) -> str:
    return _row(
        (
            str(level.concurrency),
            str(level.requests),
            str(level.errors),
            _ms(level.ttft_s_p50),
            _ms(level.ttft_s_p95),
            _s(level.e2e_s_p50),
            _s(level.e2e_s_p95),
            f"{level.requests_per_s:.2f}",
            f"{level.output_tokens_per_s:.1f}",
            _number(level.decode_tok_s_per_stream_p50),
            _number(level.mean_output_tokens),
        )
    )


def footnotes(report: BenchReport, requested_tokens: int) -> list[str]:
    """What a reader must know to trust the table: image sizes, errors, unmet output lengths."""
    levels = report.levels
    notes = [f"mean JPEG size {sum(lv['mean_jpeg_bytes'] for lv in levels) / max(len(levels), 1) / 1000:.0f} KB; "
             "TTFT is to the first generated token (answer or thinking); decode tok/s is per stream, p50"]  # fmt: skip
    if not report.warmup.get("ok"):
        notes.append(f"the warm-up request failed: {report.warmup.get('error')}")
    for level in levels:
        if level["errors"]:
            notes.append(f"concurrency {level['concurrency']}: {level['errors']} failed; first error: {level['first_error']}")
        mean = level["mean_output_tokens"]
        if mean is not None and abs(mean - requested_tokens) > 0.01:
            notes.append(f"concurrency {level['concurrency']}: {mean:.1f} output tokens on average, not the "
                         f"{requested_tokens} asked for: the server does not honour ignore_eos / min_tokens")  # fmt: skip
        if level["completed"] and not level["usage_reported"]:
            notes.append(f"concurrency {level['concurrency']}: no usage in the stream; output tokens counted from chunks")
    return notes


def write_json(report: BenchReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.as_dict(), indent=2) + "\n")


def _row(cells: tuple[str, ...]) -> str:
    return "  ".join(cell.rjust(max(len(name), 8)) for cell, name in zip(cells, COLUMNS, strict=True))


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
