"""Block bookkeeping without a model: reuse, reference counts, eviction order, key chaining."""

from __future__ import annotations

from flashsight.engine.block_manager import BlockManager, block_keys


def test_keys_chain_and_see_images():
    tokens = list(range(40))
    keys = block_keys(tokens, 16)
    assert len(keys) == 2  # the partial third block has no key
    assert block_keys(tokens, 16, known=keys[:1]) == keys
    assert block_keys([99] + tokens[1:], 16)[1] != keys[1]  # a change early changes every later key
    assert block_keys(tokens, 16, extra=[("image-a",)])[0] != block_keys(tokens, 16, extra=[("image-b",)])[0]


def test_committed_blocks_are_reused_and_shared():
    manager = BlockManager(num_blocks=8, block_size=4)
    keys = block_keys(list(range(12)), 4)
    first: list[int] = []
    manager.allocate(first, 12)
    manager.commit(first, keys)
    reuse = manager.cached_prefix(keys)
    assert reuse == first
    second: list[int] = []
    assert manager.can_allocate(second, 16, reuse)
    manager.allocate(second, 16, reuse)
    assert second[:3] == first and manager.num_used_blocks == 4
    manager.release(first)
    assert manager.num_used_blocks == 4  # still held by the second sequence
    manager.release(second)
    assert manager.num_used_blocks == 0
    assert manager.cached_prefix(keys) == reuse  # contents stay cached after release


def test_fresh_allocation_evicts_least_recently_freed_cached_blocks():
    manager = BlockManager(num_blocks=4, block_size=2)
    keys = block_keys([1, 2, 3, 4], 2)
    table: list[int] = []
    manager.allocate(table, 4)
    manager.commit(table, keys)
    manager.release(table)
    other: list[int] = []
    manager.allocate(other, 4)  # the two never-used blocks go first
    assert manager.cached_prefix(keys) == [0, 1]
    manager.allocate(other, 6)  # then the cached tail block is evicted before the head
    assert manager.cached_prefix(keys) == [0]


def test_cannot_allocate_beyond_free_blocks():
    manager = BlockManager(num_blocks=2, block_size=4)
    table: list[int] = []
    assert manager.can_allocate(table, 8) and not manager.can_allocate(table, 9)


def test_commit_reports_the_settled_prefix_and_retries_a_duplicate_later():
    """The engine commits each sequence after every step from where the last commit left off;
    a block whose key another block already holds stays unsettled until that block is evicted."""
    manager = BlockManager(num_blocks=6, block_size=2)
    keys = block_keys([1, 2, 3, 4, 5, 6], 2)
    first: list[int] = []
    manager.allocate(first, 6)
    assert manager.commit(first, keys[:1]) == 1
    assert manager.commit(first, keys, start=1) == 3
    # A second sequence computed the same tokens in blocks of its own (before the first committed).
    second: list[int] = []
    manager.allocate(second, 6)
    assert manager.commit(second, keys) == 0  # every key is the first's
    manager.release(first)
    manager.allocate([], 6)  # hands out the first's freed blocks: their keys are forgotten
    assert manager.commit(second, keys, start=0) == 3
    assert manager.cached_prefix(keys) == second
