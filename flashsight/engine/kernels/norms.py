"""RMSNorm and its residual fusions as single-pass Triton kernels.

GLM-4's decoder layer normalises after attention and after the MLP as well as before them, so a
layer holds four norms: fusing each with the residual add that follows it turns six small
launches per norm into one. Rounding follows the reference exactly: statistics in float32, the
normalised row cast to the model's dtype, then multiplied by the weight and rounded again.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashsight.engine.kernels.dependent_launch import enabled as pdl_enabled, wait_for_previous


@triton.jit
def _normalize(x, w, n, eps):
    """float32 row x -> weight * (x / rms(x)), rounded as the reference rounds."""
    var = tl.sum(x * x, axis=0) / n
    y = (x * tl.rsqrt(var + eps)).to(w.dtype).to(tl.float32)
    return (w.to(tl.float32) * y).to(w.dtype)


@triton.jit
def _rms_norm_kernel(x_ptr, w_ptr, out_ptr, stride_x, stride_out, n, eps, BLOCK: tl.constexpr, PDL: tl.constexpr):
    wait_for_previous(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0)
    tl.store(out_ptr + row * stride_out + cols, _normalize(x, w, n, eps), mask=mask)


@triton.jit
def _add_rms_norm_kernel(
    x_ptr, y_ptr, w1_ptr, w2_ptr, x_out_ptr, h_out_ptr, stride_x, stride_y, stride_out, n, eps, stride_split,
    NORM_Y: tl.constexpr, SECOND: tl.constexpr, SPLITS: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """x_out = x + norm(y; w1) (x + y without NORM_Y); with SECOND, also h_out = norm(x_out; w2).
    With SPLITS, y is the sum of that many float32 slices, rounded to x's dtype first (as the
    product that made them would have rounded it)."""
    wait_for_previous(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    y = tl.load(y_ptr + row * stride_y + cols, mask=mask, other=0.0).to(tl.float32)
    if SPLITS > 0:
        for split in tl.static_range(1, SPLITS):
            y += tl.load(y_ptr + split * stride_split + row * stride_y + cols, mask=mask, other=0.0)
        y = y.to(x_ptr.dtype.element_ty).to(tl.float32)
    if NORM_Y:
        w1 = tl.load(w1_ptr + cols, mask=mask, other=0.0)
        y = _normalize(y, w1, n, eps).to(tl.float32)
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    x_new = (x.to(tl.float32) + y).to(x.dtype)
    tl.store(x_out_ptr + row * stride_out + cols, x_new, mask=mask)
    if SECOND:
        w2 = tl.load(w2_ptr + cols, mask=mask, other=0.0)
        tl.store(h_out_ptr + row * stride_out + cols, _normalize(x_new.to(tl.float32), w2, n, eps), mask=mask)


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    rows = _rows(x)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    out = torch.empty(rows.shape, dtype=weight.dtype, device=x.device)
    n = rows.shape[1]
    pdl = pdl_enabled(x)
    _rms_norm_kernel[(rows.shape[0],)](rows, weight, out, rows.stride(0), out.stride(0), n, eps,
                                       BLOCK=triton.next_power_of_2(n), PDL=pdl, launch_pdl=pdl > 0)  # fmt: skip
    return out.view(x.shape)


def add_rms_norm(x: torch.Tensor, y: torch.Tensor, w1: torch.Tensor, eps: float, w2: torch.Tensor | None = None):
    """x + norm(y; w1), and with w2 also norm of that sum; x and y: [rows, n], contiguous rows."""
    return _add_and_norm(x, y, w1, eps, w2)


def add_rms_norm_of_sum(x: torch.Tensor, partials: torch.Tensor, w1: torch.Tensor, eps: float,
                        w2: torch.Tensor | None = None):  # fmt: skip
    """add_rms_norm with y = partials.sum(0) rounded to x's dtype (partials: [slices, rows, n]
    float32, from skinny_matmul.skinny_partials): the sum costs no launch of its own."""
    return _add_and_norm(x, partials, w1, eps, w2, summed=True)


def add_then_rms_norm(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, eps: float):
    """x + y, and norm of that sum (a pre-norm block's residual add and the next norm)."""
    return _add_and_norm(x, y, None, eps, weight)


def _add_and_norm(x, y, w1, eps, w2, summed: bool = False):
    splits = y.shape[0] if summed else 0
    rows_x, rows_y = _rows(x).contiguous(), (y if splits else _rows(y)).contiguous()
    x_out = torch.empty_like(rows_x)
    h_out = torch.empty_like(rows_x) if w2 is not None else x_out
    n = rows_x.shape[1]
    any_weight = w1 if w1 is not None else w2
    pdl = pdl_enabled(x)
    _add_rms_norm_kernel[(rows_x.shape[0],)](
        rows_x, rows_y, any_weight, w2 if w2 is not None else any_weight, x_out, h_out,
        rows_x.stride(0), rows_y.stride(-2), x_out.stride(0), n, eps, rows_y.stride(0) if splits else 0,
        NORM_Y=w1 is not None, SECOND=w2 is not None, SPLITS=splits, BLOCK=triton.next_power_of_2(n),
        PDL=pdl, launch_pdl=pdl > 0,
    )  # fmt: skip
    if w2 is None:
        return x_out.view(x.shape)
    return x_out.view(x.shape), h_out.view(x.shape)
