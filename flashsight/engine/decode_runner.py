"""Decode steps: every row of the batch computes one token, attending straight over the paged
cache through its sequence's block table (a short chunk of one sequence is several rows).

Inputs live in fixed buffers, so on a GPU each batch size (rounded up to a bucket) is captured
once, at start-up, as a CUDA graph and replayed: one launch for the whole model instead of
hundreds, which is what bounds a decode step at small batches. Capturing at start-up, before any
request arrives, keeps other threads' CUDA work (preparing requests) out of the capture. On a CPU
the same code runs eagerly, unpadded.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import torch

from flashsight.engine.host_copy import to_device
from flashsight.engine.paged_attention import PagedKVCache, padded_tables, slot_of
from flashsight.engine.sequence import Sequence

log = logging.getLogger("flashsight.engine")

_MAX_CHUNK_ROWS = 16  # longer chunks are prompts: the prefill path computes them far faster
_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256)


@dataclass
class DecodeInputs:
    """The step's inputs, in buffers sized for the largest batch."""

    token_ids: torch.Tensor  # [B] int64
    positions: torch.Tensor  # [3, B] int64
    slots: torch.Tensor  # [B] int64: where the new keys and values go
    block_tables: torch.Tensor  # [B, max_pages] int32
    context_lens: torch.Tensor  # [B] int32, the new token included

    @classmethod
    def allocate(cls, max_seqs: int, max_pages: int, device) -> DecodeInputs:
        def zeros(*shape, dtype=torch.int64):
            return torch.zeros(shape, dtype=dtype, device=device)

        return cls(zeros(max_seqs), zeros(3, max_seqs), zeros(max_seqs), zeros(max_seqs, max_pages, dtype=torch.int32),
                   zeros(max_seqs, dtype=torch.int32))  # fmt: skip

    def first(self, rows: int) -> DecodeInputs:
        return DecodeInputs(self.token_ids[:rows], self.positions[:, :rows], self.slots[:rows],
                            self.block_tables[:rows], self.context_lens[:rows])  # fmt: skip


class DecodeAttention:
    """The attend callback of a decode step: rotate, store the new keys and values, attend over pages."""

    def __init__(self, cache: PagedKVCache, inputs: DecodeInputs, ops):
        self.cache, self.inputs, self.ops = cache, inputs, ops

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos, sin) -> torch.Tensor:
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        q, k = self.ops.rope_and_store(q, k, v, cos, sin, keys, values, self.inputs.slots)
        return self.ops.paged_decode_attention(
            q, keys, values, self.inputs.block_tables, self.inputs.context_lens, self.cache.block_size
        )


class DecodeRunner:
    def __init__(self, model, cache: PagedKVCache, max_seqs: int, max_pages: int, use_graphs: bool):
        self.model = model
        self.text = model.model.language_model
        self.cache = cache
        self.device = cache.keys.device
        self.max_seqs = max_seqs
        self.inputs = DecodeInputs.allocate(max_seqs, max_pages, self.device)
        self.use_graphs = use_graphs
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle() if use_graphs else None

    def accepts(self, batch: list[tuple[Sequence, int]]) -> bool:
        """Short chunks only, none of them over an image's placeholders. A chunk of a few tokens
        (the tail of a follow-up turn after its cached prefix) runs as that many rows: each row's
        keys and values are stored before any row attends, so row j sees rows before it."""
        rows = 0
        for seq, count in batch:
            start = seq.num_computed
            if count > _MAX_CHUNK_ROWS or any(a < start + count and start < b for a, b in seq.prompt.image_spans):
                return False
            rows += count
        return rows <= self.max_seqs

    @torch.inference_mode()
    def execute(self, batch: list[tuple[Sequence, int]], previous: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [len(batch), vocab] float32 after each chunk's last token (placeholder tokens
        taken from `previous`, the step before's tokens, on the device)."""
        rows = sum(count for _, count in batch)
        padded = self._bucket(rows) if self.use_graphs else rows
        self._fill(batch, padded, previous)
        if padded in self.graphs:
            graph, logits = self.graphs[padded]
            graph.replay()
        else:
            logits = self._forward(self.inputs.first(padded))
        if rows == len(batch):
            return logits[:rows]
        last_rows = list(itertools.accumulate(count for _, count in batch))
        return logits[to_device([row - 1 for row in last_rows], torch.long, self.device)]

    @torch.inference_mode()
    def capture_all(self) -> None:
        """Capture a graph per bucket, largest first (the shared pool is sized once); every row
        is padding, so nothing but the scratch slot is written."""
        buckets = sorted({self._bucket(size) for size in _BUCKETS}, reverse=True)
        self.inputs.slots.fill_(self.cache.scratch_slot)
        self.inputs.context_lens.zero_()
        for rows in buckets:
            self._forward(self.inputs.first(rows))  # compiles the kernels outside the capture
            self._capture(rows)
        log.info("captured decode graphs for batches of %s sequences", ", ".join(map(str, sorted(buckets))))

    def _forward(self, inputs: DecodeInputs) -> torch.Tensor:
        attention = DecodeAttention(self.cache, inputs, self.text.ops)
        x = self.text.embed_tokens(inputs.token_ids)
        return self.model.logits(self.model(x, inputs.positions, attention.attend))

    def _capture(self, rows: int) -> None:
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(self.device)
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            logits = self._forward(self.inputs.first(rows))
        self.graphs[rows] = (graph, logits)
        log.debug("captured a decode graph for %d sequences", rows)

    def _bucket(self, rows: int) -> int:
        for size in _BUCKETS:
            if size >= rows and size <= self.max_seqs:
                return size
        return self.max_seqs

    def _fill(self, batch: list[tuple[Sequence, int]], padded: int, previous: torch.Tensor | None) -> None:
        """Copy the step's token ids, positions, slots and block tables into the buffers, in one
        copy that does not wait for the GPU; padding rows write to the scratch slot and attend to
        nothing. A token still on the GPU (a placeholder) is taken from `previous` there.

        At a hundred sequences this runs once per ~8 ms decode step on the engine thread, ahead
        of the step's launch: the block tables (~10k entries) go through numpy."""
        page = self.cache.block_size
        widest = max(len(seq.block_table) for seq, _ in batch)
        late_rows, late_sources = [], []
        small = [[] for _ in range(6)]  # token ids, 3 position rows, slots, context lengths
        row_tables = []
        for seq, count in batch:
            for index in range(seq.num_computed, seq.num_computed + count):
                if seq.unresolved and index == len(seq.token_ids) - 1:
                    late_rows.append(len(row_tables))
                    late_sources.append(seq.pending[1])
                small[0].append(seq.token_ids[index])
                for axis, value in enumerate(seq.position_of(index), start=1):
                    small[axis].append(value)
                small[4].append(slot_of(seq.block_table, index, page))
                small[5].append(index + 1)
                row_tables.append(seq.block_table)
        tables = padded_tables(row_tables, padded, widest)
        pad = padded - len(small[0])
        for values, filler in zip(small, (0, 0, 0, 0, self.cache.scratch_slot, 0)):
            values += [filler] * pad
        head = np.array([v for values in small for v in values], dtype=np.int64)
        packed = np.concatenate((head, tables.ravel(), np.array(late_rows + late_sources, dtype=np.int64)))
        fields = to_device(torch.from_numpy(packed), torch.long, self.device).split(
            [padded, 3 * padded, padded, padded, padded * widest, len(late_rows), len(late_sources)]
        )
        inputs = self.inputs
        inputs.token_ids[:padded].copy_(fields[0])
        inputs.positions[:, :padded].copy_(fields[1].view(3, padded))
        inputs.slots[:padded].copy_(fields[2])
        inputs.context_lens[:padded].copy_(fields[3])
        inputs.block_tables[:padded, :widest].copy_(fields[4].view(padded, widest))
        if late_rows:
            inputs.token_ids[fields[5]] = previous[fields[6]]
