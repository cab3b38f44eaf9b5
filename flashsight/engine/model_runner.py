"""One engine step on the model: a flat batch of token chunks from many sequences in, the
next-token logits of the sequences that reached their end out."""

from __future__ import annotations

import torch

from flashsight.engine.decode_runner import DecodeRunner
from flashsight.engine.image_cache import ImageCache
from flashsight.engine.kernels.varlen_spans import VarlenSpans
from flashsight.engine.loader import LoadedCheckpoint
from flashsight.engine.paged_attention import BatchAttention, DecodeRows, PagedKVCache, SeqSlice
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
    def execute(self, batch: list[Chunk]) -> tuple[list[int], torch.Tensor]:
        """Run the batch. Returns the indices in `batch` of the chunks that end their sequence's
        known tokens, and their next-token logits [len(indices), vocab] float32 (a buffer the
        next step may reuse: consume it first)."""
        if self.decoder is not None and self.decoder.accepts(batch):
            return list(range(len(batch))), self.decoder.execute(batch)
        ids, positions, chunks, new_slots, last_rows = [], [], [], [], []
        decode_rows, decode_seqs = [], []
        offset = 0
        for seq, count in batch:
            start = seq.num_computed
            ids += seq.token_ids[start : start + count]
            positions.append(seq.positions(start, count))
            new_slots += self._slots(seq.block_table, start, start + count)
            if count == 1:
                decode_rows.append(offset)
                decode_seqs.append(seq)
            else:
                context = torch.tensor(self._slots(seq.block_table, 0, start + count), device=self.device)
                chunks.append(SeqSlice(offset, count, context))
            offset += count
            last_rows.append(offset - 1)
        x = self.model.embed(torch.tensor(ids, device=self.device), [])
        self._insert_images(x, batch)
        attention = BatchAttention(self.cache, torch.tensor(new_slots, device=self.device), chunks,
                                   self._decode_rows(decode_rows, decode_seqs), self.model.model.language_model.ops)  # fmt: skip
        hidden = self.model(x, torch.cat(positions, dim=1).to(self.device), attention.attend)
        ends = [i for i, (seq, count) in enumerate(batch) if seq.num_computed + count == len(seq.token_ids)]
        if not ends:
            return [], hidden.new_empty((0,))
        last_rows = torch.tensor([last_rows[i] for i in ends], device=self.device)
        return ends, self.model.logits(hidden[last_rows])

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Compile the text prefill kernel's variants now, not during some request's first token
        (the vision tower's attention goes through SDPA on a GPU)."""
        text, ops = self.ckpt.config.text_config, self.model.model.language_model.ops
        heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
        dim = text.hidden_size // heads
        for rows in (16, 256):  # both tile heights
            q = torch.randn(rows, heads, dim, device=self.device, dtype=self.ckpt.dtype)
            k = torch.randn(rows, kv_heads, dim, device=self.device, dtype=self.ckpt.dtype)
            ops.varlen_attention(q, k, k, VarlenSpans.square([rows]), causal=True)

    def _slots(self, block_table: list[int], start: int, end: int) -> list[int]:
        page = self.cache.block_size
        return [block_table[i // page] * page + i % page for i in range(start, end)]

    def _decode_rows(self, rows: list[int], seqs: list[Sequence]) -> DecodeRows | None:
        if not rows:
            return None
        widest = max(len(seq.block_table) for seq in seqs)
        tables = torch.zeros((len(seqs), widest), dtype=torch.int32)
        for i, seq in enumerate(seqs):
            tables[i, : len(seq.block_table)] = torch.tensor(seq.block_table, dtype=torch.int32)
        lens = torch.tensor([seq.num_computed + 1 for seq in seqs], dtype=torch.int32)
        return DecodeRows(torch.tensor(rows, device=self.device), tables.to(self.device), lens.to(self.device))

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
        if missing:
            pixels = torch.cat([seq.prompt.image_pixels(i) for seq, i in missing.values()]).to(self.device)
            grids = [seq.prompt.image_grids[i] for seq, i in missing.values()]
            for digest, embeds in zip(missing, self.model.encode_images(pixels, grids)):
                self.images.put(digest, embeds)
                found[digest] = embeds
        return found
