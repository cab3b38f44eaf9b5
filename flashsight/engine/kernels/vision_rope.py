"""The vision tower's rotary embedding (halves swapped, NeoX layout, computed in float32 as the
reference does), applied to q and k where the qkv projection wrote them.

The projection's output holds q, k and v side by side per token, so each is a strided view of
it. SDPA's cuDNN kernel takes such views as they are (each row's channels contiguous), so q and k
are rotated in place and v is not touched: one pass over two thirds of the projection, where
writing q, k and v out contiguous took a pass over all of it, reading and writing."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


# Not specialized on the token count: Triton would compile a variant per count's divisibility
# by 16, mid-serving, as batches of images change size.
@triton.jit(do_not_specialize=["tokens"])
def _rotate_qk_kernel(
    qkv_ptr, cos_ptr, sin_ptr, stride_t, stride_part, stride_ct, tokens, heads,
    HEADS: tl.constexpr, DIM: tl.constexpr,
):  # fmt: skip
    """One token of q (program axis 1 == 0) or k (== 1): every head, whole rows, in place."""
    token = tl.program_id(0).to(tl.int64)
    part = tl.program_id(1)
    h = tl.arange(0, HEADS)[:, None]
    c = tl.arange(0, DIM // 2)[None, :]
    mask = h < heads
    at = qkv_ptr + token * stride_t + part * stride_part + h * DIM + c
    first = tl.load(at, mask=mask, other=0.0)
    second = tl.load(at + DIM // 2, mask=mask, other=0.0)
    dtype = first.dtype
    x1, x2 = first.to(tl.float32), second.to(tl.float32)
    cos1 = tl.load(cos_ptr + token * stride_ct + c)
    cos2 = tl.load(cos_ptr + token * stride_ct + DIM // 2 + c)
    sin1 = tl.load(sin_ptr + token * stride_ct + c)
    sin2 = tl.load(sin_ptr + token * stride_ct + DIM // 2 + c)
    tl.store(at, (x1 * cos1 + (-x2) * sin1).to(dtype), mask=mask)
    tl.store(at + DIM // 2, (x2 * cos2 + x1 * sin2).to(dtype), mask=mask)


def rotate_vision_qk_(qkv: torch.Tensor, heads: int, cos: torch.Tensor, sin: torch.Tensor):
    """qkv: [T, 3 * heads * D], rows contiguous (as the projection writes it); cos, sin: [T, D]
    float32. Rotates q and k in place; returns q, k and v, each a [T, heads, D] view of qkv."""
    tokens = qkv.shape[0]
    dim = qkv.shape[1] // (3 * heads)
    if qkv.stride(-1) != 1:
        qkv = qkv.contiguous()
    if tokens:
        cos, sin = cos.float().contiguous(), sin.float().contiguous()
        _rotate_qk_kernel[(tokens, 2)](
            qkv, cos, sin, qkv.stride(0), heads * dim, cos.stride(0), tokens, heads,
            HEADS=triton.next_power_of_2(heads), DIM=dim,
        )  # fmt: skip
    return qkv.view(tokens, 3, heads, dim).unbind(1)
