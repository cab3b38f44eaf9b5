"""The vision tower's rotary embedding (halves swapped, NeoX layout, computed in float32 as the
reference does) applied to queries and keys in place, one launch per step. The reference spends
about seven full passes over float32 copies of q and k per layer, the largest share of the
tower's time outside its matrix products."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _vision_rope_kernel(
    q_ptr, k_ptr, cos_ptr, sin_ptr, stride_qt, stride_qh, stride_kt, stride_kh, stride_ct,
    heads, HEADS: tl.constexpr, HALF: tl.constexpr,
):  # fmt: skip
    """One token of q (program axis 1 == 0) or k (== 1): every head, both halves."""
    token = tl.program_id(0).to(tl.int64)
    if tl.program_id(1) == 0:
        base, stride_h = q_ptr + token * stride_qt, stride_qh
    else:
        base, stride_h = k_ptr + token * stride_kt, stride_kh
    h = tl.arange(0, HEADS)[:, None]
    c = tl.arange(0, HALF)[None, :]
    mask = h < heads
    first_ptr = base + h * stride_h + c
    first = tl.load(first_ptr, mask=mask, other=0.0)
    second = tl.load(first_ptr + HALF, mask=mask, other=0.0)
    dtype = first.dtype
    x1, x2 = first.to(tl.float32), second.to(tl.float32)
    cos1 = tl.load(cos_ptr + token * stride_ct + c)
    cos2 = tl.load(cos_ptr + token * stride_ct + HALF + c)
    sin1 = tl.load(sin_ptr + token * stride_ct + c)
    sin2 = tl.load(sin_ptr + token * stride_ct + HALF + c)
    tl.store(first_ptr, (x1 * cos1 + (-x2) * sin1).to(dtype), mask=mask)
    tl.store(first_ptr + HALF, (x2 * cos2 + x1 * sin2).to(dtype), mask=mask)


def rotate_vision_(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """q, k: [T, heads, D] (channels contiguous), rotated in place; cos, sin: [T, D] float32."""
    tokens, heads, dim = q.shape
    if tokens == 0:
        return
    cos, sin = cos.float().contiguous(), sin.float().contiguous()
    _vision_rope_kernel[(tokens, 2)](
        q, k, cos, sin, q.stride(0), q.stride(1), k.stride(0), k.stride(1), cos.stride(0),
        heads, HEADS=triton.next_power_of_2(heads), HALF=dim // 2,
    )  # fmt: skip
