"""The engine's statistics, for metrics and the status page."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from flashsight.engine.step_timer import StepTimer

_RATE_WINDOW_S = 10.0


@dataclass
class EngineStats:
    """Counters since start; written by the worker thread only."""

    generated_tokens: int = 0
    finished_requests: int = 0
    aborted_requests: int = 0
    steps: int = 0  # batches the model ran: the supervisor's watchdog watches it move
    # How work was batched, to set one load beside another (HTTP against in-process, say): a
    # step reads every weight once, so fewer rows a step means more reads for the same tokens.
    mixed_steps: int = 0  # steps with a prompt chunk in them (the rest are all decodes)
    batched_rows: int = 0  # sequences summed over steps: divided by steps, the mean batch
    prompt_tokens_computed: int = 0  # in chunks of more than one token
    timer: StepTimer = field(default_factory=lambda: StepTimer(torch.device("cpu")))
    _recent: deque = field(default_factory=deque, repr=False)  # token timestamps in the window

    def count_step(self, counts: list[int]) -> None:
        """A step that computes `counts` tokens for each of its sequences."""
        self.steps += 1
        self.batched_rows += len(counts)
        chunked = sum(count for count in counts if count > 1)
        self.prompt_tokens_computed += chunked
        self.mixed_steps += chunked > 0

    def count_token(self) -> None:
        now = time.monotonic()
        self.generated_tokens += 1
        self._recent.append(now)
        while self._recent and self._recent[0] < now - _RATE_WINDOW_S:
            self._recent.popleft()

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        return sum(1 for t in self._recent if t >= now - _RATE_WINDOW_S) / _RATE_WINDOW_S

    def counts(self, scheduler, blocks, incoming: int) -> dict[str, Any]:
        """The counters that change every step and cost nothing to read."""
        return {
            "running_requests": len(scheduler.running),
            "waiting_requests": len(scheduler.waiting) + incoming,
            "kv_blocks_used": blocks.num_used_blocks,
            "kv_blocks_free": blocks.num_free_blocks,
            "generated_tokens": self.generated_tokens,
            "finished_requests": self.finished_requests,
            "aborted_requests": self.aborted_requests,
            "steps": self.steps,
            "mixed_steps": self.mixed_steps,
            "batched_rows": self.batched_rows,
            "prompt_tokens_computed": self.prompt_tokens_computed,
            "gpu_busy_s": round(self.timer.busy_s, 4),  # the device on steps
            "gpu_mixed_s": round(self.timer.mixed_s, 4),  # ...of which on steps with a prompt chunk
            "gpu_wait_s": round(self.timer.wait_s, 4),  # the device between steps, waiting for the engine
            "launch_s": round(self.timer.launch_s, 4),  # the engine thread queueing steps
            "launch_mixed_s": round(self.timer.launch_mixed_s, 4),  # ...of which steps with a prompt chunk
        }

    def snapshot(self, scheduler, blocks, images, incoming: int) -> dict[str, Any]:
        return self.counts(scheduler, blocks, incoming) | {
            "kv_blocks_total": blocks.num_blocks,
            "prefix_cache_queries": blocks.prefix_queries,
            "prefix_cache_hits": blocks.prefix_hits,
            "prefix_cache_hit_rate": blocks.prefix_hits / blocks.prefix_queries if blocks.prefix_queries else 0.0,
            "image_cache_hits": images.hits,
            "image_cache_misses": images.misses,
            "image_cache_hit_rate": images.hits / (images.hits + images.misses) if images.hits + images.misses else 0.0,
            "preemptions": scheduler.preemptions,
            "tokens_per_second": self.tokens_per_second(),
        }
