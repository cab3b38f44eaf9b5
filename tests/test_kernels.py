"""The Triton kernels compute what their PyTorch references compute: checked on the CPU through
Triton's interpreter, in a fresh process because Triton reads TRITON_INTERPRET at import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_triton_kernels_match_the_reference_ops(tiny_model_dir):
    pytest.importorskip("triton", reason="Triton ships with CUDA builds of PyTorch; this build has none")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(HERE.parent)}
    result = subprocess.run(
        [sys.executable, str(HERE / "triton_interpreted.py"), tiny_model_dir],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all kernel checks passed" in result.stdout


def test_images_of_one_size_side_by_side_share_one_attention_call():
    from flashsight.engine.kernels.varlen_spans import same_length_runs

    # two 100-row images, a 64-row one, then two more of 100 rows: three calls, not five
    starts, lens = [0, 100, 200, 264, 364], [100, 100, 64, 100, 100]
    assert same_length_runs(starts, lens) == [(0, 2, 100), (200, 1, 64), (264, 2, 100)]
    assert same_length_runs([0], [5476]) == [(0, 1, 5476)]
    assert same_length_runs([], []) == []


def test_equal_images_batched_through_sdpa_attend_as_each_alone():
    """The GPU's image path (SDPA over runs of equal-length images, written into one output)
    computes each image's attention as the reference does, one image at a time."""
    import torch

    from flashsight.engine.kernels.ops import TorchOps, _sdpa_batch, _sdpa_into
    from flashsight.engine.kernels.varlen_spans import VarlenSpans

    torch.manual_seed(4)
    q, k, v = (torch.randn(60, 4, 16) for _ in range(3))
    want = TorchOps.image_attention(q, k, v, VarlenSpans.square([20, 20, 20]))
    torch.testing.assert_close(_sdpa_batch(q, k, v, 0, 3, 20), want)
    out = torch.empty_like(q)
    _sdpa_into(out, q, k, v, 0, 2, 20)
    _sdpa_into(out, q, k, v, 40, 1, 20)
    torch.testing.assert_close(out, want)
