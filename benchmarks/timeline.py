"""Each step of a loaded level on the device's clock: when it began and ended, what it held, and
what that says about the level (the GPU idle before the first step and between steps, the tail
after the last prompt, and a mixed step's cost split into a fixed part and its work).

inprocess.py's `--timeline DIR` attaches one to the engine: the step timer already brackets each
step with two CUDA events; this keeps them, with the step's rows, prompt tokens, chunks and the
images the vision tower encodes in it, and reads them only after the level (never waiting inside
it). A level's records go to DIR/timeline-<workload>-c<concurrency>-b<budget>.json.

The fit: a mixed step's device time = fixed + per prompt token x tokens + per image x images +
per decode row x rows, by least squares over the level's mixed steps. It means little where the
contents move together: at 8192 every step holds ~6 whole prompts (tokens follow images), at 1024
every step holds ~1,000 prompt tokens (the fixed part and the tokens' part cannot be told apart).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


class StepTimeline:
    def __init__(self, engine):
        self.engine = engine
        self.steps: list[dict] = []
        self._marks: list = []
        self._origin = None
        timer, launch = engine.stats.timer, engine._launch
        mark = timer._mark

        def recording_mark():
            event = mark()
            self._marks.append(event)
            return event

        def recording_launch(batch):
            self.steps.append(_describe(batch))
            return launch(batch)

        timer._mark = recording_mark
        engine._launch = recording_launch

    def start(self) -> None:
        """The level begins now: records from here on, timed from an event recorded now."""
        self.steps, self._marks = [], []
        self._origin = torch.cuda.Event(enable_timing=True)
        self._origin.record()

    def finish(self, wall_s: float) -> dict:
        """Each step's begin and end in ms from the level's start (after the level: waits for the
        GPU), and the summary."""
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        for step, (began, ended) in zip(self.steps, zip(self._marks[0::2], self._marks[1::2])):
            step["begin_ms"] = round(self._origin.elapsed_time(began), 3)
            step["end_ms"] = round(self._origin.elapsed_time(ended), 3)
        return {"wall_s": round(wall_s, 3), "summary": summarize(self.steps, wall_s), "steps": self.steps}

    def write(self, folder: str, name: str, record: dict) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        Path(folder, f"timeline-{name}.json").write_text(json.dumps(record))


def _describe(batch) -> dict:
    prompt_tokens = chunks = later = images = decodes = 0
    for seq, count in batch:
        if seq.num_computed >= len(seq.prompt.token_ids):  # a generated token's row
            decodes += 1
            continue
        chunks += 1
        prompt_tokens += count
        later += seq.num_computed > 0
        start, stop = seq.num_computed, seq.num_computed + count
        images += sum(start <= a < stop for a, _ in seq.prompt.image_spans)
    return {"decode_rows": decodes, "prompt_tokens": prompt_tokens, "chunks": chunks, "later_chunks": later,
            "images": images}  # fmt: skip


def summarize(steps: list[dict], wall_s: float) -> dict:
    timed = [s for s in steps if "end_ms" in s]
    if not timed:
        return {}
    busy = [s["end_ms"] - s["begin_ms"] for s in timed]
    gaps = [b["begin_ms"] - a["end_ms"] for a, b in zip(timed, timed[1:])]
    mixed = [s for s in timed if s["prompt_tokens"]]
    last_prompt_end = max((s["end_ms"] for s in mixed), default=0.0)
    tail = [s for s in timed if s["begin_ms"] >= last_prompt_end]
    decode_only = [s for s in timed if not s["prompt_tokens"]]
    out = {
        "steps": len(timed), "mixed": len(mixed),
        "before_first_ms": round(timed[0]["begin_ms"], 1),
        "after_last_ms": round(wall_s * 1e3 - timed[-1]["end_ms"], 1),
        "busy_s": round(sum(busy) / 1e3, 3), "gaps_s": round(sum(max(g, 0.0) for g in gaps) / 1e3, 3),
        "gaps_over_1ms": sum(g > 1.0 for g in gaps),
        "tail": {"steps": len(tail), "s": round((timed[-1]["end_ms"] - last_prompt_end) / 1e3, 3),
                 "rows_mean": round(float(np.mean([s["decode_rows"] for s in tail])), 1) if tail else 0},
        "decode_only": _by_rows(decode_only),
        "mixed_fit": fit_mixed(mixed),
    }  # fmt: skip
    return out


def _by_rows(steps: list[dict]) -> dict:
    """Decode-only steps' mean ms by rows, in bands of 16."""
    bands: dict[int, list[float]] = {}
    for s in steps:
        bands.setdefault(s["decode_rows"] // 16 * 16, []).append(s["end_ms"] - s["begin_ms"])
    return {f"{band}-{band + 15}": [len(v), round(float(np.mean(v)), 3)] for band, v in sorted(bands.items())}


def fit_mixed(steps: list[dict]) -> dict:
    """Least squares: ms = fixed + a x prompt tokens + b x images + c x decode rows."""
    if len(steps) < 8:
        return {}
    features = np.array([[1.0, s["prompt_tokens"], s["images"], s["decode_rows"]] for s in steps])
    ms = np.array([s["end_ms"] - s["begin_ms"] for s in steps])
    coef, *_ = np.linalg.lstsq(features, ms, rcond=None)
    residual = ms - features @ coef
    return {"fixed_ms": round(float(coef[0]), 2), "per_1000_tokens_ms": round(float(coef[1]) * 1e3, 2),
            "per_image_ms": round(float(coef[2]), 2), "per_decode_row_ms": round(float(coef[3]), 4),
            "residual_ms_rms": round(float(np.sqrt(np.mean(residual**2))), 2), "mean_ms": round(float(ms.mean()), 2)}  # fmt: skip
