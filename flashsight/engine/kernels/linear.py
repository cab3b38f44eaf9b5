"""The model's matrix products in the fast op set: which implementation computes each.

- A few rows (decode steps of 1 to 16 sequences): the split-K kernel (`skinny_matmul`). cuBLAS
  leaves most of the GPU idle on these and reads the weights at 3.2-4.1 TB/s, the kernel at
  3.7-4.7: ~0.4 ms less per decode step of the 40-layer decoder.
- More rows: cuBLAS, through whichever of its two libraries was faster for the product's shape on
  the H200 (BENCHMARKS.md, session 6). For products whose output is no wider than their input
  (the attention output and the MLP's down projection) that is cuBLASLt: 10-40% faster at 48-96
  rows and 2-7% on prompts. For the others it is plain cuBLAS (the gate/up projection runs 6%
  slower under cuBLASLt on prompts). PyTorch picks the library from a process-wide setting, so
  each product sets it and puts the previous one back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flashsight.engine.kernels.activation import silu_and_mul
from flashsight.engine.kernels.norms import add_rms_norm, add_rms_norm_of_sum
from flashsight.engine.kernels.skinny_matmul import MAX_ROWS, skinny_linear, skinny_partials, skinny_silu_and_mul


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear's contract: x [..., k] @ weight[n, k].T (+ bias)."""
    if _few_rows(x, weight):
        return skinny_linear(x, weight, bias)
    if not x.is_cuda:
        return F.linear(x, weight, bias)
    previous = torch.backends.cuda.preferred_blas_library()
    torch.backends.cuda.preferred_blas_library(library_for(weight))
    try:
        return F.linear(x, weight, bias)
    finally:
        torch.backends.cuda.preferred_blas_library(previous)


def library_for(weight: torch.Tensor) -> str:
    """cuBLASLt for products no wider than their input, plain cuBLAS for the others."""
    return "cublaslt" if weight.shape[0] <= weight.shape[1] else "cublas"


def linear_add_rms_norm(residual, x, weight, w1, eps: float, w2=None):
    """add_rms_norm(residual, linear(x, weight), w1, eps, w2). With a few rows the norm kernel
    adds up the product's slices as it reads them: one launch fewer per product, which at a
    batch of one is a launch's latency in a step of ~600 launches."""
    if _few_rows(x, weight):
        return add_rms_norm_of_sum(residual, skinny_partials(x, weight), w1, eps, w2)
    return add_rms_norm(residual, linear(x, weight), w1, eps, w2)


def linear_silu_and_mul(x: torch.Tensor, gate_up: torch.Tensor) -> torch.Tensor:
    """silu_and_mul(linear(x, gate_up)): with a few rows, one launch that gates as it writes."""
    if _few_rows(x, gate_up):
        return skinny_silu_and_mul(x, gate_up)
    return silu_and_mul(linear(x, gate_up))


def _few_rows(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return x.dim() == 2 and 0 < x.shape[0] <= MAX_ROWS and x.stride(-1) == 1 and weight.is_contiguous()
