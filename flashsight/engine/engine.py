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
from flashsight.engine.detokenizer import OutputText
from flashsight.engine.errors import EngineOverloadedError, InvalidRequestError
from flashsight.engine.guided import GrammarCompiler
from flashsight.engine.image_cache import ImageCache
from flashsight.engine.kernels.ops import pick_ops
from flashsight.engine.kv_budget import kv_cache_blocks
from flashsight.engine.loader import load_checkpoint
from flashsight.engine.model_runner import ModelRunner
from flashsight.engine.paged_attention import PagedKVCache
from flashsight.engine.prompt import PreparedPrompt, PromptBuilder
from flashsight.engine.sampling import TokenSampler
from flashsight.engine.scheduler import Scheduler
from flashsight.engine.sequence import Sequence
from flashsight.engine.stats import EngineStats
from flashsight.engine.types import ChatRequest, GenerationEvent, ModelInfo

log = logging.getLogger("flashsight.engine")


@dataclass
class _Job:
    seq: Sequence
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)

    def emit(self, event: GenerationEvent) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the requester's event loop is gone: nobody is listening
            self.seq.cancelled.set()


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
        if ckpt.device.type == "cuda":
            self.runner.warm_up()
        self.scheduler = Scheduler(self.blocks, config.max_num_seqs, config.max_num_batched_tokens)
        self.stats = EngineStats()
        self._grammars: GrammarCompiler | None = None
        self._grammars_lock = threading.Lock()
        self._incoming: queue.Queue[_Job | None] = queue.Queue()
        self._jobs: dict[int, _Job] = {}  # by id(seq), owned by the worker
        self._trim_asked = threading.Event()
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
        max_pages = -(-self.max_model_len // self.config.block_size)
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
        snapshot = self.stats.snapshot(self.scheduler, self.blocks, self.images, self._incoming.qsize())
        return snapshot | {"gpu_memory": gpu_memory(self.ckpt.device)}

    def counts(self) -> dict[str, Any]:
        """The snapshot's per-step counters alone: cheap enough to read after every step."""
        return self.stats.counts(self.scheduler, self.blocks, self._incoming.qsize())

    def request_trim(self) -> None:
        """Ask the worker to free its caches before its next step (from any thread): GPU memory
        is running short."""
        self._trim_asked.set()

    async def generate(self, request: ChatRequest) -> AsyncIterator[GenerationEvent]:
        if len(self.scheduler.waiting) + self._incoming.qsize() >= self.config.max_queue:
            raise EngineOverloadedError("the server is busy; retry shortly", retry_after_s=1.0)
        prompt, grammar = await anyio.to_thread.run_sync(self.prepare, request)
        job = _Job(self._sequence(request, prompt, grammar), asyncio.get_running_loop())
        self._incoming.put(job)
        try:
            while True:
                event = await job.events.get()
                yield event
                if event.finish_reason:
                    return
        finally:
            job.seq.cancelled.set()  # the client left or the request ended: free its blocks

    def prepare(self, request: ChatRequest) -> tuple[PreparedPrompt, Any]:
        """Tokenize, process images, compile the output grammar; refuse what cannot fit or be
        enforced. Runs off the event loop."""
        guided = request.sampling.guided
        grammar = self.grammars.compile(guided) if guided else None
        prompt = self.prompts.build(request.messages, request.chat_template_kwargs, request.tools)
        length = len(prompt.token_ids)
        if length >= self.max_model_len:
            raise InvalidRequestError(
                f"the prompt has {length} tokens, but the model's context holds {self.max_model_len}",
                param="messages",
            )
        if self.blocks.blocks_needed(length + 1) > self.blocks.num_blocks:
            raise InvalidRequestError(f"the prompt has {length} tokens, more than the KV cache holds", param="messages")
        return prompt, grammar

    async def shutdown(self) -> None:
        self._incoming.put(None)
        await anyio.to_thread.run_sync(self._worker.join, 30)

    def _sequence(self, request: ChatRequest, prompt: PreparedPrompt, grammar) -> Sequence:
        params = request.sampling
        room = min(self.max_model_len, self.blocks.num_blocks * self.blocks.block_size) - len(prompt.token_ids)
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else self.ckpt.eos_ids)
        return Sequence(
            request_id=request.request_id,
            prompt=prompt,
            params=params,
            sampler=TokenSampler(
                params, prompt.token_ids, stop_ids | self.ckpt.eos_ids, self.ckpt.device,
                self.grammars.matcher(grammar) if grammar is not None else None,
            ),  # fmt: skip
            text=OutputText(self.tokenizer, params.stop),
            max_tokens=room if params.max_tokens is None else min(params.max_tokens, room),
            stop_ids=stop_ids,
        )

    # ---- the worker thread --------------------------------------------------------------------

    def _serve(self) -> None:
        while self._admit(block=not self.scheduler.has_work()):
            try:
                if self._trim_asked.is_set():
                    self._trim_caches()
                self._drop_cancelled()
                batch = self.scheduler.schedule() if self.scheduler.has_work() else []
                if batch:
                    self._step(batch)
            except Exception:  # a bug in the loop itself: fail what is in flight, keep serving
                log.exception("the engine loop failed; %d requests end with an error", len(self._jobs))
                for job in list(self._jobs.values()):
                    self._fail(job)

    def _admit(self, block: bool) -> bool:
        """Move newly submitted jobs into the scheduler; False once shutdown is asked."""
        try:
            job = self._incoming.get(block=block)
            while True:
                if job is None:
                    return False
                self._jobs[id(job.seq)] = job
                self.scheduler.add(job.seq)
                job = self._incoming.get_nowait()
        except queue.Empty:
            return True

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._jobs.values() if j.seq.cancelled.is_set()]:
            self._end(job)
            self.stats.aborted_requests += 1

    def _step(self, batch: list[tuple[Sequence, int]]) -> None:
        self.stats.steps += 1
        for seq, _ in batch:
            if seq.queued_s is None:
                seq.queued_s = time.monotonic() - seq.submitted_at
        try:
            ends, logits = self.runner.execute(batch)
        except torch.cuda.OutOfMemoryError:
            self._out_of_memory(batch)
            return
        except Exception:  # a failed step fails its requests, never the engine
            log.exception("an engine step failed; its %d requests end with an error", len(batch))
            for seq, _ in batch:
                self._fail(self._jobs[id(seq)])
            return
        for seq, count in batch:
            seq.num_computed += count
            computed_blocks = seq.num_computed // self.blocks.block_size
            self.blocks.commit(seq.block_table, seq.block_keys(self.blocks.block_size)[:computed_blocks])
        if ends:
            self._sample([batch[i][0] for i in ends], logits)

    def _sample(self, seqs: list[Sequence], logits) -> None:
        """One token for each sequence: drawn together, then each request hears of its own."""
        try:
            tokens = sample_batch([seq.sampler for seq in seqs], logits)
        except Exception:
            log.exception("sampling failed for a step; its %d requests end with an error", len(seqs))
            for seq in seqs:
                self._fail(self._jobs[id(seq)])
            return
        for seq, token in zip(seqs, tokens):
            try:
                self._append_token(self._jobs[id(seq)], token)
            except Exception:
                log.exception("request %s failed after an engine step", seq.request_id)
                self._fail(self._jobs[id(seq)])

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
        job.emit(GenerationEvent("", [], job.seq.prompt_len, job.seq.num_output, "error", reason))

    def _append_token(self, job: _Job, token: int) -> None:
        seq = job.seq
        seq.token_ids.append(token)
        self.stats.count_token()
        finish = None
        guide = seq.sampler.guide
        if token in seq.stop_ids or (guide is not None and guide.finished):
            finish, delta = "stop", ""
        else:
            delta = seq.text.append(token)
            finish = "stop" if seq.text.stopped else ("length" if seq.num_output >= seq.max_tokens else None)
        if finish:
            self.stats.finished_requests += 1
            self._end(job)  # blocks are free before the requester hears it is done
            job.emit(seq.event(delta + seq.text.finish(), [token], finish))
        else:
            job.emit(seq.event(delta, [token]))

    def _end(self, job: _Job) -> None:
        self.scheduler.finish(job.seq)
        del self._jobs[id(job.seq)]


def gpu_memory(device: torch.device) -> dict[str, int] | None:
    """The whole card's memory in use (every process's), or None off a GPU."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return {"used_bytes": total - free, "total_bytes": total}


def _model_name(model: str) -> str:
    """The id clients send: a hub id as is, a directory by its last component."""
    path = Path(model).expanduser()
    return path.name if path.is_dir() else model
