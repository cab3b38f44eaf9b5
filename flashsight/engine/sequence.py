"""A request inside the batching engine: its tokens, how many are in the KV cache, its blocks."""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field

import torch

from flashsight.engine.block_manager import block_keys
from flashsight.engine.detokenizer import OutputText
from flashsight.engine.prompt import PreparedPrompt
from flashsight.engine.sampling import TokenSampler
from flashsight.engine.types import GenerationEvent, RequestTimeline, SamplingParams


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)  # identity: the scheduler finds sequences in its queues by `is`
class Sequence:
    request_id: str
    prompt: PreparedPrompt
    params: SamplingParams
    sampler: TokenSampler
    text: OutputText
    max_tokens: int  # output budget after the context limit
    stop_ids: set[int]
    cancelled: threading.Event = field(default_factory=threading.Event)
    token_ids: list[int] = field(default_factory=list)
    num_computed: int = 0  # tokens whose keys and values are in the cache
    block_table: list[int] = field(default_factory=list)
    status: SeqStatus = SeqStatus.WAITING
    preemptions: int = 0
    committed_blocks: int = 0  # leading blocks settled in the prefix cache (BlockManager.commit)
    received_at: float = field(default_factory=time.monotonic)  # when the engine was handed the request
    submitted_at: float = field(default_factory=time.monotonic)  # its prompt built, it joined the queue
    scheduled_at: float | None = None  # set by the engine when the sequence is first scheduled
    # Tokens sampled by steps still on the GPU sit in token_ids as placeholders until they are
    # read back; `pending` says where the newest one is: (step number, row of that step's tokens).
    unresolved: int = 0
    pending: tuple[int, int] | None = None
    _keys: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.token_ids = list(self.prompt.token_ids)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt.token_ids)

    @property
    def num_output(self) -> int:
        return len(self.token_ids) - self.prompt_len

    @property
    def num_known(self) -> int:
        """Tokens whose values are on the CPU (all but the placeholders at the end)."""
        return len(self.token_ids) - self.unresolved

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed

    @property
    def has_all_tokens(self) -> bool:
        """Its last output token is sampled (maybe still on the GPU): nothing more to compute."""
        return self.num_output >= max(self.max_tokens, 1)

    def positions(self, start: int, count: int) -> torch.Tensor:
        """[3, count] M-RoPE positions of tokens start..start+count: the prompt's own, then
        generated tokens continuing one past the largest prompt position."""
        end = start + count
        parts = []
        if start < self.prompt_len:
            parts.append(self.prompt.positions[:, start : min(end, self.prompt_len)])
        if end > self.prompt_len:
            first = max(start, self.prompt_len) - self.prompt_len + self.prompt.next_position
            parts.append(torch.arange(first, end - self.prompt_len + self.prompt.next_position).expand(3, -1))
        return torch.cat(parts, dim=1)

    def position_of(self, index: int) -> tuple[int, int, int]:
        """The M-RoPE position (temporal, height, width) of token `index`."""
        if index < self.prompt_len:
            return tuple(self.prompt.positions[:, index].tolist())
        value = index - self.prompt_len + self.prompt.next_position
        return value, value, value

    def block_keys(self, block_size: int) -> list[str]:
        """Prefix-cache keys of the full blocks of the known tokens (extended as tokens grow)."""
        full = self.num_known // block_size
        if len(self._keys) < full:
            extras = self.block_extras(block_size)
            self._keys = block_keys(self.token_ids[: full * block_size], block_size, extras, self._keys)
        return self._keys[:full]

    def block_extras(self, block_size: int) -> list[tuple[str, ...]]:
        """Per block, the hashes of the images whose placeholders fall in it (for prefix keys)."""
        extras: list[list[str]] = [[] for _ in range(-(-len(self.token_ids) // block_size))]
        for (start, end), digest in zip(self.prompt.image_spans, self.prompt.image_hashes):
            for block in range(start // block_size, (end - 1) // block_size + 1):
                extras[block].append(digest)
        return [tuple(e) for e in extras]

    def event(self, text: str, tokens: list[int], emitted: int, finish: str | None = None) -> GenerationEvent:
        """An event for the requester, `emitted` output tokens told so far (this one's included)."""
        timeline = None
        if emitted == 1 and self.scheduled_at is not None:
            timeline = RequestTimeline(self.received_at, self.submitted_at, self.scheduled_at, time.monotonic())
        return GenerationEvent(text, tokens, self.prompt_len, emitted, finish, timeline=timeline)
