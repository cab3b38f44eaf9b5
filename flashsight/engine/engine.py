"""The engine as a service: requests in, token events out, many requests batched continuously.

A worker thread owns the model and the scheduler; the asyncio side only queues requests and
relays events. Each step, the scheduler picks token chunks from running and waiting sequences,
the model runner computes them in one batch, and sampled tokens become events.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import torch

from flashsight.engine.batch_sampling import sample_batch
from flashsight.engine.block_manager import BlockManager
from flashsight.engine.config import EngineConfig
from flashsight.engine.decode_runner import DecodeRunner
from flashsight.engine.detokenizer import OutputText, TokenBytes
from flashsight.engine.errors import EngineOverloadedError, InvalidRequestError
from flashsight.engine.guided import GrammarCompiler
from flashsight.engine.host_copy import HostTokens
from flashsight.engine.image_cache import ImageCache
from flashsight.engine.kernels.ops import pick_ops
from flashsight.engine.kv_budget import kv_cache_blocks
from flashsight.engine.loader import load_checkpoint
from flashsight.engine.model_runner import ModelRunner
from flashsight.engine.paged_attention import PagedKVCache, table_width
from flashsight.engine.prompt import PreparedPrompt, PromptBuilder
from flashsight.engine.sampling import TokenSampler
from flashsight.engine.scheduler import Scheduler
from flashsight.engine.sequence import Sequence
from flashsight.engine.stats import EngineStats
from flashsight.engine.step_timer import StepTimer
from flashsight.engine.types import ChatRequest, GenerationEvent, ModelInfo

log = logging.getLogger("flashsight.engine")


@dataclass
class _Job:
    """A request from its arrival to its end; its sequence exists once its prompt is built."""

    request: ChatRequest
    grammar: Any
    loop: asyncio.AbstractEventLoop
    received: float
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)  # the requester left
    seq: Sequence | None = None

    def emit(self, event: GenerationEvent | Exception) -> None:
        deliver(self.loop, [(self, event)])


def deliver(loop: asyncio.AbstractEventLoop, events: list[tuple[_Job, GenerationEvent | Exception]]) -> None:
    """Hand events to their requesters on `loop`, all in one callback: a step's hundred tokens
    cost the event loop one wake-up instead of a hundred (each a write to its self-pipe and a
    turn of the GIL away from the engine thread)."""

    def put_all() -> None:
        for job, event in events:
            job.events.put_nowait(event)

    try:
        loop.call_soon_threadsafe(put_all)
    except RuntimeError:  # the requesters' event loop is gone: nobody is listening
        for job, _ in events:
            job.cancelled.set()


_PLACEHOLDER = 0  # stands for a sampled token until it is read back; never fed to the model


@dataclass(eq=False)
class _LaunchedStep:
    """A step queued on the GPU whose sampled tokens the CPU has not read yet."""

    number: int
    computed: list[tuple[Sequence, int, int]] = field(default_factory=list)  # seq, num_computed, preemptions
    sampled: list[tuple[Sequence, int]] = field(default_factory=list)  # seq, index of its placeholder
    tokens: HostTokens | None = None  # in the order of `sampled`
    needs_history: bool = False  # a sequence in it samples with a grammar or its own generator
    done: Any = None  # a CUDA event recorded after the step's work; None off a GPU (run as launched)

    def finished(self) -> bool:
        """Whether the GPU has run the step (never waits)."""
        return self.done is None or self.done.query()


class Engine:
    def __init__(self, config: EngineConfig):
        self.config = config
        self.ckpt = ckpt = load_checkpoint(config)
        hf = ckpt.config
        self.max_model_len = config.max_model_len or hf.text_config.max_position_embeddings
        on_gpu = ckpt.device.type == "cuda"
        self.prompts = PromptBuilder(ckpt.processor, hf.image_token_id, hf.vision_config.spatial_merge_size,
                                     ckpt.device if on_gpu else None, ckpt.dtype if on_gpu else None)  # fmt: skip
        self.tokenizer = ckpt.processor.tokenizer
        self._token_bytes = TokenBytes.of(self.tokenizer)  # the detokenizer's fast path (byte-level BPE)
        self.info = ModelInfo(
            name=config.served_model_name or _model_name(config.model),
            path=str(ckpt.path),
            device=str(ckpt.device),
            dtype=str(ckpt.dtype).removeprefix("torch."),
            max_model_len=self.max_model_len,
        )
        cache = self._allocate_kv_cache()
        self.blocks = BlockManager(cache.num_blocks, config.block_size, config.enable_prefix_caching)
        self.images = ImageCache(config.image_cache_mb * 2**20)
        ckpt.model.use_ops(pick_ops(config.kernels, ckpt.device))
        self.runner = ModelRunner(ckpt, cache, self.images, self._decode_runner(cache))
        self.runner.warm_up()  # on a CPU too: cheap there, and it keeps this path tested
        self.scheduler = Scheduler(self.blocks, config.max_num_seqs, config.max_num_batched_tokens)
        self.stats = EngineStats(timer=StepTimer(ckpt.device))
        self._grammars: GrammarCompiler | None = None
        self._grammars_lock = threading.Lock()
        self._incoming: queue.Queue[_Job | None] = queue.Queue()
        self._arrivals: list[_Job] = []  # taken from _incoming, prompts not built yet (worker's)
        self._prepared: list[_Job] = []  # prompts built, to join the scheduler (worker's)
        self._jobs: dict[int, _Job] = {}  # by id(seq), owned by the worker
        self._trim_asked = threading.Event()
        self._in_flight: _LaunchedStep | None = None  # the step whose tokens are not read back yet
        self._step_number = 0
        self._worker = threading.Thread(target=self._serve, name="flashsight-engine", daemon=True)
        self._worker.start()

    def _allocate_kv_cache(self) -> PagedKVCache:
        text, config = self.ckpt.config.text_config, self.config
        head_dim = text.hidden_size // text.num_attention_heads
        shape = (text.num_hidden_layers, config.block_size, text.num_key_value_heads, head_dim)
        num_blocks = kv_cache_blocks(config, self.ckpt.device, PagedKVCache.bytes_per_block(*shape, self.ckpt.dtype))
        return PagedKVCache(*shape[:1], num_blocks, *shape[1:], self.ckpt.dtype, self.ckpt.device)

    def _decode_runner(self, cache: PagedKVCache) -> DecodeRunner:
        use_graphs = self.config.cuda_graphs and self.ckpt.device.type == "cuda"
        max_pages = table_width(-(-self.max_model_len // self.config.block_size))
        runner = DecodeRunner(self.ckpt.model, cache, self.config.max_num_seqs, max_pages, use_graphs)
        if use_graphs:
            runner.capture_all()
        return runner

    @property
    def grammars(self) -> GrammarCompiler:
        """Built on the first constrained request: an engine that never sees one never loads
        the grammar library."""
        with self._grammars_lock:
            if self._grammars is None:
                vocab_size = self.ckpt.config.text_config.vocab_size
                self._grammars = GrammarCompiler(self.tokenizer, vocab_size, self.ckpt.eos_ids)
            return self._grammars

    def sampling_defaults(self) -> dict[str, Any]:
        return dict(self.ckpt.sampling_defaults)

    def is_ready(self) -> bool:
        return self._worker.is_alive()

    def snapshot(self) -> dict[str, Any]:
        """Statistics for metrics and the status page."""
        snapshot = self.stats.snapshot(self.scheduler, self.blocks, self.images, self._not_yet_queued())
        return snapshot | {"gpu_memory": gpu_memory(self.ckpt.device)}

    def counts(self) -> dict[str, Any]:
        """The snapshot's per-step counters alone: cheap enough to read after every step."""
        return self.stats.counts(self.scheduler, self.blocks, self._not_yet_queued())

    def request_trim(self) -> None:
        """Ask the worker to free its caches before its next step (from any thread): GPU memory
        is running short."""
        self._trim_asked.set()

    def _not_yet_queued(self) -> int:
        """Requests handed to the engine that have not joined the scheduler's queue yet (read
        from any thread: a moment's count)."""
        return self._incoming.qsize() + len(self._arrivals) + len(self._prepared)

    def _queue_is_full(self) -> bool:
        """`max_queue` requests wait for a seat in the batch already, beyond the seats free now
        (requests not yet built count: a burst on an idle engine fills its free seats first)."""
        pending = len(self.scheduler.waiting) + self._not_yet_queued()
        free_seats = max(0, self.config.max_num_seqs - len(self.scheduler.running))
        return pending - free_seats >= self.config.max_queue

    async def generate(self, request: ChatRequest) -> AsyncIterator[GenerationEvent]:
        """Stream a request's events. Its prompt is built on the engine's thread; a prompt that
        cannot be built or cannot fit raises here as it would have in `prepare`."""
        if self._queue_is_full():
            raise EngineOverloadedError("the server is busy; retry shortly", retry_after_s=1.0)
        received = time.monotonic()
        guided = request.sampling.guided
        grammar = await anyio.to_thread.run_sync(self.grammars.compile, guided) if guided else None
        job = _Job(request, grammar, asyncio.get_running_loop(), received)
        self._incoming.put(job)
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, Exception):
                    raise event
                yield event
                if event.finish_reason:
                    return
        finally:
            job.cancelled.set()  # the client left or the request ended: free its blocks

    def prepare(self, request: ChatRequest) -> tuple[PreparedPrompt, Any]:
        """The request's prompt (`build_prompt`) and output grammar, for callers outside the
        engine's loop (tests, benchmarks)."""
        guided = request.sampling.guided
        return self.build_prompt(request), self.grammars.compile(guided) if guided else None

    def build_prompt(self, request: ChatRequest) -> PreparedPrompt:
        """Tokenize and process images; refuse a prompt that cannot fit. On a GPU the images'
        work is queued on the current stream, not waited for."""
        prompt = self.prompts.build(request.messages, request.chat_template_kwargs, request.tools)
        length = len(prompt.token_ids)
        if length >= self.max_model_len:
            raise InvalidRequestError(
                f"the prompt has {length} tokens, but the model's context holds {self.max_model_len}",
                param="messages",
            )
        if self.blocks.blocks_needed(length + 1) > self.blocks.num_blocks:
            raise InvalidRequestError(f"the prompt has {length} tokens, more than the KV cache holds", param="messages")
        return prompt

    async def shutdown(self) -> None:
        self._incoming.put(None)
        await anyio.to_thread.run_sync(self._worker.join, 30)

    def _sequence(
        self, request: ChatRequest, prompt: PreparedPrompt, grammar, received: float | None = None,
        cancelled: threading.Event | None = None,
    ) -> Sequence:  # fmt: skip
        params = request.sampling
        room = min(self.max_model_len, self.blocks.num_blocks * self.blocks.block_size) - len(prompt.token_ids)
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else self.ckpt.eos_ids)
        seq = Sequence(
            request_id=request.request_id,
            prompt=prompt,
            params=params,
            sampler=TokenSampler(
                params, prompt.token_ids, stop_ids | self.ckpt.eos_ids, self.ckpt.device,
                self.grammars.matcher(grammar) if grammar is not None else None,
            ),  # fmt: skip
            text=OutputText(self.tokenizer, params.stop, self._token_bytes),
            max_tokens=room if params.max_tokens is None else min(params.max_tokens, room),
            stop_ids=stop_ids,
        )
        if received is not None:
            seq.received_at = received
        if cancelled is not None:
            seq.cancelled = cancelled
        return seq

    # ---- the worker thread --------------------------------------------------------------------

    def _serve(self) -> None:
        """Each turn queues step N+1 on the GPU before reading step N's tokens back, so the CPU
        work of a step (detokenizing, events, scheduling, building inputs) overlaps the GPU's
        work on the next one instead of leaving it idle. New requests' prompts are built in the
        same gap, with two steps queued: on this thread, since a thread building them beside it
        would take the GIL from this one between its kernel launches, and a mixed step's
        hundreds of launches would each wait (benchmarks/prepare_parts.py: 800 launches took
        6 ms alone, 23 ms beside one such thread and 149 ms beside four, on the H100 machine)."""
        while self._admit(block=self._idle()):
            try:
                if self._trim_asked.is_set():
                    self._trim_caches()
                self._drop_cancelled()
                if self._in_flight is not None and self._in_flight.needs_history:
                    self._read_back()  # a grammar or a seeded draw needs its tokens on the CPU first
                batch = self.scheduler.schedule() if self.scheduler.has_work() else []
                launched = self._launch(batch) if batch else None
                self._build_prompts(launched or self._in_flight)
                self._read_back()
                self._in_flight = launched
            except Exception:  # a bug in the loop itself: fail what is in flight, keep serving
                log.exception("the engine loop failed; %d requests end with an error", len(self._jobs))
                self._in_flight = None
                for job in list(self._jobs.values()):
                    self._fail(job)

    def _idle(self) -> bool:
        """Nothing to compute, read back or build: the worker may block for the next request."""
        return not (self.scheduler.has_work() or self._in_flight is not None or self._arrivals or self._prepared)

    def _admit(self, block: bool) -> bool:
        """Take newly submitted jobs, and move those whose prompts are built into the scheduler;
        False once shutdown is asked."""
        if block:
            self.stats.timer.idle()
        for job in self._prepared:
            if job.cancelled.is_set():
                self.stats.aborted_requests += 1
            else:
                self._jobs[id(job.seq)] = job
                self.scheduler.add(job.seq)
        self._prepared = []
        try:
            job = self._incoming.get(block=block)
            while True:
                if job is None:
                    return False
                self._arrivals.append(job)
                job = self._incoming.get_nowait()
        except queue.Empty:
            return True

    def _build_prompts(self, running: _LaunchedStep | None) -> None:
        """Build the arrivals' prompts and sequences; they join the scheduler at the next turn.
        A prompt that cannot be built fails its request with the reason.

        While `running` (the newest step queued) is on the GPU this thread has nothing else to
        do, and builds them all. Once the GPU has run out of work, it builds only what fills the
        next step's token budget and leaves the rest to the next turn, after that step is queued:
        a hundred W1 requests arriving at once took ~0.5 s to build, and the GPU waited for all
        of them before its first step (benchmarks/timeline.py, BENCHMARKS.md session 21)."""
        ready = self._tokens_ready()
        for index, job in enumerate(self._arrivals):
            if ready >= self.scheduler.max_num_batched_tokens and (running is None or running.finished()):
                self._arrivals = self._arrivals[index:]
                return
            if job.cancelled.is_set():
                self.stats.aborted_requests += 1
                continue
            try:
                prompt = self.build_prompt(job.request)
                job.seq = self._sequence(job.request, prompt, job.grammar, job.received, job.cancelled)
            except Exception as exc:  # the requester raises it, as a refusal or a failure
                job.emit(exc)
                continue
            self._prepared.append(job)
            ready += len(job.seq.token_ids)
        self._arrivals = []

    def _tokens_ready(self) -> int:
        """Prompt tokens built and not yet scheduled."""
        seqs = [job.seq for job in self._prepared] + list(self.scheduler.waiting)
        return sum(len(seq.token_ids) - seq.num_computed for seq in seqs)

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._jobs.values() if j.cancelled.is_set()]:
            self._end(job)
            self.stats.aborted_requests += 1

    def _launch(self, batch: list[tuple[Sequence, int]]) -> _LaunchedStep | None:
        """Queue the batch's model step and its sampling on the GPU. The sampled tokens go into
        the sequences as placeholders; the step that follows reads them on the device."""
        self.stats.count_step([count for _, count in batch])
        for seq, _ in batch:
            if seq.scheduled_at is None:
                seq.scheduled_at = time.monotonic()
        previous = self._in_flight.tokens.on_device if self._in_flight and self._in_flight.tokens else None
        begun = self.stats.timer.begin()
        step = self._queue_step(batch, previous)
        self.stats.timer.end(begun, mixed=any(count > 1 for _, count in batch))
        if step is not None and self.ckpt.device.type == "cuda":
            step.done = torch.cuda.Event()
            step.done.record()
        return step

    def _queue_step(self, batch: list[tuple[Sequence, int]], previous: torch.Tensor | None) -> _LaunchedStep | None:
        try:
            ends, logits = self.runner.execute(batch, previous)
        except torch.cuda.OutOfMemoryError:
            self._out_of_memory(batch)
            return None
        except Exception:  # a failed step fails its requests, never the engine
            log.exception("an engine step failed; its %d requests end with an error", len(batch))
            for seq, _ in batch:
                self._fail(self._jobs[id(seq)])
            return None
        self._step_number += 1
        step = _LaunchedStep(self._step_number)
        for seq, count in batch:
            seq.num_computed += count
            step.computed.append((seq, seq.num_computed, seq.preemptions))
        if not ends:
            return step
        seqs = [batch[i][0] for i in ends]
        try:
            pending = [seq.pending[1] if seq.unresolved else None for seq in seqs]
            step.tokens = HostTokens(sample_batch([seq.sampler for seq in seqs], logits, pending, previous))
        except Exception:
            log.exception("sampling failed for a step; its %d requests end with an error", len(seqs))
            for seq in seqs:
                self._fail(self._jobs[id(seq)])
            return step
        for row, seq in enumerate(seqs):
            seq.token_ids.append(_PLACEHOLDER)
            seq.unresolved += 1
            seq.pending = (step.number, row)
            step.sampled.append((seq, len(seq.token_ids) - 1))
            step.needs_history |= seq.sampler.guide is not None or seq.sampler.generator is not None
        return step

    def _read_back(self) -> None:
        """Wait for the step in flight's tokens, put them in place of their placeholders, commit
        the blocks it filled, and tell each request of its token."""
        step, self._in_flight = self._in_flight, None
        if step is None:
            return
        tokens = step.tokens.tolist() if step.tokens is not None else []
        self.stats.timer.collect()
        for row, ((seq, index), token) in enumerate(zip(step.sampled, tokens)):
            seq.token_ids[index] = token
            seq.unresolved -= 1
            if seq.pending == (step.number, row):
                seq.pending = None
        for seq, computed, preemptions in step.computed:
            full_blocks = computed // self.blocks.block_size
            if id(seq) in self._jobs and seq.preemptions == preemptions and full_blocks > seq.committed_blocks:
                keys = seq.block_keys(self.blocks.block_size)[:full_blocks]
                seq.committed_blocks = self.blocks.commit(seq.block_table, keys, seq.committed_blocks)
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Job, GenerationEvent]]] = {}
        for (seq, index), token in zip(step.sampled, tokens):
            job = self._jobs.get(id(seq))
            if job is None:  # it ended while the step ran (a stop, a cancel): the token is moot
                continue
            try:
                seq.sampler.record(token)
                outbox.setdefault(job.loop, []).append((job, self._append_token(job, token, index)))
            except Exception:
                log.exception("request %s failed after an engine step", seq.request_id)
                self._fail(job)
        for loop, events in outbox.items():
            deliver(loop, events)

    def _out_of_memory(self, batch: list[tuple[Sequence, int]]) -> None:
        """Fail the request with the largest chunk, the likeliest cause, and free the caches. The
        rest of the batch keeps its blocks and is computed again next step."""
        seq, count = max(batch, key=lambda chunk: chunk[1])
        log.warning("out of GPU memory in a step of %d requests; request %s (%d tokens in it) ends with an error",
                    len(batch), seq.request_id, count)  # fmt: skip
        self._fail(self._jobs[id(seq)], "the GPU ran out of memory for this request")
        self._trim_caches()

    def _trim_caches(self) -> None:
        self._trim_asked.clear()
        freed = self.images.bytes
        self.images.clear()
        if self.ckpt.device.type == "cuda":
            torch.cuda.empty_cache()  # hand the allocator's unused blocks back to the driver
        if freed:
            log.warning("GPU memory is short: dropped %d MiB of cached image embeddings", freed // 2**20)

    def _fail(self, job: _Job, reason: str = "the engine failed") -> None:
        self._end(job)
        seq = job.seq
        job.emit(GenerationEvent("", [], seq.prompt_len, seq.num_known - seq.prompt_len, "error", reason))

    def _append_token(self, job: _Job, token: int, index: int) -> GenerationEvent:
        """The event telling the requester of its output token at `index` in its tokens (a
        finished request's blocks are already free when it is sent)."""
        seq = job.seq
        emitted = index - seq.prompt_len + 1
        self.stats.count_token()
        finish = None
        guide = seq.sampler.guide
        if token in seq.stop_ids or (guide is not None and guide.finished):
            finish, delta = "stop", ""
        else:
            delta = seq.text.append(token)
            finish = "stop" if seq.text.stopped else ("length" if emitted >= seq.max_tokens else None)
        if finish:
            self.stats.finished_requests += 1
            self._end(job)  # blocks are free before the requester hears it is done
            return seq.event(delta + seq.text.finish(), [token], emitted, finish)
        return seq.event(delta, [token], emitted)

    def _end(self, job: _Job) -> None:
        self.scheduler.finish(job.seq)
        del self._jobs[id(job.seq)]


def gpu_memory(device: torch.device) -> dict[str, int] | None:
    """The whole card's memory in use (every process's), or None off a GPU; with how often the
    allocator ran short and had to free its cached blocks and try again, which waits for the
    whole GPU each time (a sign the activations' reserve is too small for the load)."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    retries = torch.cuda.memory_stats(device).get("num_alloc_retries", 0)
    return {"used_bytes": total - free, "total_bytes": total, "allocator_retries": retries}


def _model_name(model: str) -> str:
    """The id clients send: a hub id as is, a directory by its last component."""
    path = Path(model).expanduser()
    return path.name if path.is_dir() else model
