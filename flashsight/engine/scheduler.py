"""Which sequences compute how many tokens in the next step.

Running sequences go first (decodes and unfinished prefills, oldest first), then waiting ones
join while the step's token budget and the KV blocks last. A long prompt is split into chunks so
running decodes never stall behind it. When blocks run out, the newest running sequence is
preempted: its blocks are freed and it is recomputed later, first in line. No torch here.
"""

from __future__ import annotations

from collections import deque

from flashsight.engine.block_manager import BlockManager
from flashsight.engine.sequence import SeqStatus, Sequence


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = 0

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def schedule(self) -> list[tuple[Sequence, int]]:
        budget = self.max_num_batched_tokens
        batch, preempted = self._schedule_running(budget)
        budget -= sum(count for _, count in batch)
        if not preempted:
            batch += self._admit_waiting(budget)
        return batch

    def finish(self, seq: Sequence) -> None:
        """Remove a finished or cancelled sequence and free its blocks at once."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.release(seq.block_table)
        seq.status = SeqStatus.FINISHED

    def _schedule_running(self, budget: int) -> tuple[list[tuple[Sequence, int]], bool]:
        batch, preempted, index = [], False, 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            if seq.has_all_tokens:  # its final token is still on the GPU: it ends when read back
                index += 1
                continue
            count = min(seq.num_uncomputed, budget)
            while not self.blocks.can_allocate(seq.block_table, seq.num_computed + count):
                preempted = True
                self._preempt(self.running.pop())
                if seq.status is SeqStatus.WAITING:
                    return batch, preempted
            self.blocks.allocate(seq.block_table, seq.num_computed + count)
            batch.append((seq, count))
            budget -= count
            index += 1
        return batch, preempted

    def _admit_waiting(self, budget: int) -> list[tuple[Sequence, int]]:
        batch = []
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            reuse = self._cached_prefix(seq)
            cached_tokens = len(reuse) * self.blocks.block_size
            count = min(len(seq.token_ids) - cached_tokens, budget)
            if not self.blocks.can_allocate(seq.block_table, cached_tokens + count, reuse):
                break
            self.blocks.allocate(seq.block_table, cached_tokens + count, reuse)
            seq.num_computed = cached_tokens
            seq.status = SeqStatus.RUNNING
            self.waiting.popleft()
            self.running.append(seq)
            batch.append((seq, count))
            budget -= count
        return batch

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        keys = seq.block_keys(self.blocks.block_size)
        reuse = self.blocks.cached_prefix(keys)
        if len(reuse) * self.blocks.block_size >= len(seq.token_ids):
            reuse = reuse[:-1]  # the last token must be computed to get its logits
        return reuse

    def _preempt(self, seq: Sequence) -> None:
        self.blocks.release(seq.block_table)
        seq.num_computed = 0
        seq.committed_blocks = 0
        seq.status = SeqStatus.WAITING
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)
