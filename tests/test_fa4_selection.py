"""kernels="fa4": which attention calls FlashAttention-4 can take (its varlen layout wants each
side's sequences back to back), and that asking for it where it cannot run fails at start-up with
a reason. FA4 itself runs only on a GPU: tests/test_gpu_fast_path.py checks its logits there."""

from __future__ import annotations

import pytest
import torch

from flashsight.engine.config import EngineConfig
from flashsight.engine.kernels.ops import pick_ops
from flashsight.engine.kernels.varlen_spans import VarlenSpans


def test_back_to_back_prompts_pack_into_cumulative_lengths():
    # Two prompts after three decode rows: rows 3..8 and 8..12, each over its own keys.
    spans = VarlenSpans([3, 8], [5, 4], [3, 8], [5, 4])
    rows = spans.packed_on(torch.device("cpu"))
    assert rows is not None
    assert (rows.q_rows, rows.k_rows) == (slice(3, 12), slice(3, 12))
    assert rows.cu_q.tolist() == [0, 5, 9] and rows.cu_k.tolist() == [0, 5, 9]
    assert rows.cu_q.dtype == torch.int32
    assert (rows.max_q, rows.max_k) == (5, 5)
    assert spans.packed_on(torch.device("cpu")) is rows  # worked out once for all the layers


def test_chunks_after_a_cached_prefix_pack_against_their_gathered_keys():
    # Two later chunks (rows 0..3 and 3..5) over their gathered contexts of 10 and 6 keys.
    spans = VarlenSpans([0, 3], [3, 2], [0, 10], [10, 6])
    rows = spans.packed_on(torch.device("cpu"))
    assert (rows.q_rows, rows.k_rows) == (slice(0, 5), slice(0, 16))
    assert rows.cu_q.tolist() == [0, 3, 5] and rows.cu_k.tolist() == [0, 10, 16]
    assert (rows.max_q, rows.max_k) == (3, 10)


def test_rows_between_the_sequences_leave_them_to_the_other_kernels():
    # A decode row at row 5 sits between the two prompts.
    assert VarlenSpans([0, 6], [5, 4], [0, 6], [5, 4]).packed_on(torch.device("cpu")) is None
    assert VarlenSpans([], [], [], []).packed_on(torch.device("cpu")) is None


def test_fa4_is_a_kernels_setting_that_needs_a_gpu():
    assert EngineConfig(model="m", kernels="fa4").kernels == "fa4"
    with pytest.raises(ValueError, match="auto, triton, torch or fa4"):
        EngineConfig(model="m", kernels="fa5")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        pick_ops("fa4", torch.device("cpu"))
