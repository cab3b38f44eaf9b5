"""A serving process freezes what it built while starting: the collector skips it afterwards,
and still collects what serving leaves behind."""

import gc
import weakref

import pytest

from flashsight.ops.heap import freeze_startup_heap


@pytest.fixture
def frozen():
    yield freeze_startup_heap()
    gc.unfreeze()  # the other tests' collections walk everything again


class _Node:
    pass


def test_startup_objects_leave_the_collectors_generations(frozen):
    assert frozen > 1000  # pytest, this test's imports and the interpreter's own
    assert len(gc.get_objects()) < gc.get_freeze_count()  # a full walk now skips them


def test_garbage_made_after_the_freeze_is_still_collected(frozen):
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
