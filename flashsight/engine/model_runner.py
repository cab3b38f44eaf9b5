"""One engine step on the model: a flat batch of token chunks from many sequences in, the
next-token logits of the sequences that reached their end out."""

from __future__ import annotations

import numpy as np
import torch

from flashsight.engine.decode_runner import DecodeRunner
from flashsight.engine.host_copy import to_device
from flashsight.engine.image_cache import ImageCache
from flashsight.engine.kernels.varlen_spans import VarlenSpans
from flashsight.engine.loader import LoadedCheckpoint
from flashsight.engine.paged_attention import (
    BatchAttention, DecodeRows, PagedKVCache, SeqSlice, padded_tables, slot_of, slots_of, table_width,
)
from flashsight.engine.sequence import Sequence

Chunk = tuple[Sequence, int]  # a sequence and how many of its uncomputed tokens to compute now


class ModelRunner:
    def __init__(self, ckpt: LoadedCheckpoint, cache: PagedKVCache, images: ImageCache, decoder: DecodeRunner | None):
        self.ckpt = ckpt
        self.model = ckpt.model
        self.device = ckpt.device
        self.cache = cache
        self.images = images
        self.decoder = decoder  # the fast path for steps that are all decodes

    @torch.inference_mode()
    def execute(self, batch: list[Chunk], previous: torch.Tensor | None = None) -> tuple[list[int], torch.Tensor]:
        """Run the batch. Returns the indices in `batch` of the chunks that end their sequence's
        known tokens, and their next-token logits [len(indices), vocab] float32 (a buffer the
        next step may reuse: consume it first). A sequence's last token may be a placeholder for
        one the previous step sampled: it is taken from `previous` on the device (`seq.pending`).
        Nothing here waits for the GPU."""
        device, long = self.device, torch.long
        ends = [i for i, (seq, count) in enumerate(batch) if seq.num_computed + count == len(seq.token_ids)]
        if self.decoder is not None and self.decoder.accepts(batch):
            logits = self.decoder.execute(batch, previous)
            return ends, logits if len(ends) == len(batch) else logits[to_device(ends, long, device)]
        rows = _StepRows(self.cache.block_size)
        for seq, count in batch:
            if count == 1:
                rows.add_token(seq)
            else:
                context = slots_of(seq.block_table, 0, seq.num_computed + count, self.cache.block_size)
                rows.add_chunk(seq, count, to_device(context, long, device))
        positions, new_slots = rows.tensors()
        token_ids = to_device(rows.ids, long, device)
        self._take_pending(token_ids, batch, previous)
        x = self.model.embed(token_ids, [])
        self._insert_images(x, batch)
        decode = self._decode_rows(rows.decode_rows, rows.decode_seqs)
        ops = self.model.model.language_model.ops
        attention = BatchAttention(self.cache, to_device(new_slots, long, device), rows.chunks, decode, ops)
        # Only the rows whose next token is wanted go through the whole last layer.
        keep = None if len(ends) == len(rows.ids) else to_device([rows.last_rows[i] for i in ends], long, device)
        hidden = self.model(x, to_device(positions, long, device), attention.attend, keep)
        if not ends:
            return [], hidden.new_empty((0,))
        return ends, self.model.logits(hidden)

    def _take_pending(self, token_ids: torch.Tensor, batch: list[Chunk], previous: torch.Tensor | None) -> None:
        """Fill the rows whose token is still a placeholder from the previous step's tokens."""
        rows, sources, offset = [], [], 0
        for seq, count in batch:
            last = len(seq.token_ids) - 1
            if seq.unresolved and seq.num_computed <= last < seq.num_computed + count:
                rows.append(offset + last - seq.num_computed)
                sources.append(seq.pending[1])
            offset += count
        if rows:
            rows_on_device = to_device(rows, torch.long, self.device)
            token_ids[rows_on_device] = previous[to_device(sources, torch.long, self.device)]

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Compile the text prefill kernel's and the vision tower's kernels now, not during some
        request's first token (the first image paid about half a second of compiles)."""
        text, ops = self.ckpt.config.text_config, self.model.model.language_model.ops
        heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
        dim = text.hidden_size // heads
        # One call compiles it: lengths reach the kernel in a tensor, and every stride it will see
        # is a multiple of 16 elements, as here.
        q = torch.randn(256, heads, dim, device=self.device, dtype=self.ckpt.dtype)
        k = torch.randn(256, kv_heads, dim, device=self.device, dtype=self.ckpt.dtype)
        ops.varlen_attention(q, k, k, VarlenSpans.square([256]), causal=True)
        vision = self.ckpt.config.vision_config
        side = 2 * vision.spatial_merge_size  # the smallest grid of whole merge blocks, twice over
        width = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        self.model.encode_images(torch.zeros(side * side, width, device=self.device), [(1, side, side)])

    def _decode_rows(self, rows: list[int], seqs: list[Sequence]) -> DecodeRows | None:
        if not rows:
            return None
        widest = table_width(max(len(seq.block_table) for seq in seqs))
        tables = padded_tables([seq.block_table for seq in seqs], len(seqs), widest, np.int32)
        lens = [seq.num_computed + 1 for seq in seqs]
        device = self.device
        return DecodeRows(to_device(rows, torch.long, device), to_device(torch.from_numpy(tables), torch.int32, device),
                          to_device(lens, torch.int32, device))  # fmt: skip

    def _insert_images(self, x: torch.Tensor, batch: list[Chunk]) -> None:
        """Overwrite image placeholder rows with the rows of their image's embeddings."""
        needed = []  # (row in x, sequence, image index, first image row, rows)
        offset = 0
        for seq, count in batch:
            start, end = seq.num_computed, seq.num_computed + count
            for index, (a, b) in enumerate(seq.prompt.image_spans):
                lo, hi = max(a, start), min(b, end)
                if lo < hi:
                    needed.append((offset + lo - start, seq, index, lo - a, hi - lo))
            offset += count
        if not needed:
            return
        embeds = self._image_embeddings([(seq, index) for _, seq, index, _, _ in needed])
        for row, seq, index, first, rows in needed:
            x[row : row + rows] = embeds[seq.prompt.image_hashes[index]][first : first + rows].to(x.dtype)

    def _image_embeddings(self, wanted: list[tuple[Sequence, int]]) -> dict[str, torch.Tensor]:
        """Embeddings per image hash: from the cache, or one vision-tower call for all the rest."""
        found, missing = {}, {}
        for seq, index in wanted:
            digest = seq.prompt.image_hashes[index]
            if digest in found or digest in missing:
                continue
            cached = self.images.get(digest)
            if cached is None:
                missing[digest] = (seq, index)
            else:
                found[digest] = cached
        if missing:  # the pixels were made on this stream, by the engine's thread (PromptBuilder)
            pixels = torch.cat([seq.prompt.image_pixels(i) for seq, i in missing.values()]).to(self.device)
            grids = [seq.prompt.image_grids[i] for seq, i in missing.values()]
            for digest, embeds in zip(missing, self.model.encode_images(pixels, grids)):
                self.images.put(digest, embeds)
                found[digest] = embeds
        return found


class _StepRows:
    """A mixed step's flattened rows, in batch order: token ids, M-RoPE positions and new cache
    slots, the chunks of more than one token, and the single-token rows (decodes riding along).
    A hundred single-token rows cost ~60 us each as small CPU tensors (~6 ms before the step
    queued any GPU work); as plain lists they are gathered into one tensor per run of them."""

    def __init__(self, page: int):
        self.page = page
        self.ids: list[int] = []
        self.chunks: list[SeqSlice] = []
        self.decode_rows: list[int] = []
        self.decode_seqs: list[Sequence] = []
        self.last_rows: list[int] = []
        self._position_parts: list[torch.Tensor] = []
        self._slot_parts: list[torch.Tensor] = []
        self._token_positions: list[list[int]] = [[], [], []]  # the current run of single tokens
        self._token_slots: list[int] = []

    def add_token(self, seq: Sequence) -> None:
        index = seq.num_computed
        self.decode_rows.append(len(self.ids))
        self.decode_seqs.append(seq)
        self.ids.append(seq.token_ids[index])
        for axis, value in enumerate(seq.position_of(index)):
            self._token_positions[axis].append(value)
        self._token_slots.append(slot_of(seq.block_table, index, self.page))
        self.last_rows.append(len(self.ids) - 1)

    def add_chunk(self, seq: Sequence, count: int, context_slots: torch.Tensor) -> None:
        self._end_token_run()
        start = seq.num_computed
        self.chunks.append(SeqSlice(len(self.ids), count, context_slots))
        self.ids += seq.token_ids[start : start + count]
        self._position_parts.append(seq.positions(start, count))
        self._slot_parts.append(slots_of(seq.block_table, start, start + count, self.page))
        self.last_rows.append(len(self.ids) - 1)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [3, T] and new slots [T], int64 on the CPU."""
        self._end_token_run()
        return torch.cat(self._position_parts, dim=1), torch.cat(self._slot_parts)

    def _end_token_run(self) -> None:
        if self._token_slots:
            self._position_parts.append(torch.tensor(self._token_positions, dtype=torch.long))
            self._slot_parts.append(torch.tensor(self._token_slots, dtype=torch.long))
            self._token_positions, self._token_slots = [[], [], []], []
