"""The vision tower's rotary embedding (halves swapped, NeoX layout, computed in float32 as the
reference does), fused with splitting the qkv projection into q, k and v.

The projection's output holds q, k and v interleaved per token, so each is a strided view;
SDPA copied all three into contiguous tensors before attending (three extra passes per layer,
~1.3 ms per 1024x1024 image). One launch here reads the projection once and writes q and k
rotated and v as it is, each contiguous, in the token-major layout SDPA's kernels take as is."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


# Not specialized on the token count: Triton would compile a variant per count's divisibility
# by 16, mid-serving, as batches of images change size.
@triton.jit(do_not_specialize=["tokens"])
def _split_rotate_kernel(
    qkv_ptr, out_ptr, cos_ptr, sin_ptr, stride_t, stride_part, stride_ct, tokens, heads,
    HEADS: tl.constexpr, DIM: tl.constexpr,
):  # fmt: skip
    """One token of q (program axis 1 == 0), k (== 1) or v (== 2): every head, whole rows."""
    token = tl.program_id(0).to(tl.int64)
    part = tl.program_id(1)
    h = tl.arange(0, HEADS)[:, None]
    c = tl.arange(0, DIM // 2)[None, :]
    mask = h < heads
    src = qkv_ptr + token * stride_t + part * stride_part + h * DIM + c
    dst = out_ptr + (part * tokens + token) * heads * DIM + h * DIM + c
    first = tl.load(src, mask=mask, other=0.0)
    second = tl.load(src + DIM // 2, mask=mask, other=0.0)
    if part == 2:
        tl.store(dst, first, mask=mask)
        tl.store(dst + DIM // 2, second, mask=mask)
    else:
        dtype = first.dtype
        x1, x2 = first.to(tl.float32), second.to(tl.float32)
        cos1 = tl.load(cos_ptr + token * stride_ct + c)
        cos2 = tl.load(cos_ptr + token * stride_ct + DIM // 2 + c)
        sin1 = tl.load(sin_ptr + token * stride_ct + c)
        sin2 = tl.load(sin_ptr + token * stride_ct + DIM // 2 + c)
        tl.store(dst, (x1 * cos1 + (-x2) * sin1).to(dtype), mask=mask)
        tl.store(dst + DIM // 2, (x2 * cos2 + x1 * sin2).to(dtype), mask=mask)


def split_rotate_vision(qkv: torch.Tensor, heads: int, cos: torch.Tensor, sin: torch.Tensor):
    """qkv: [T, 3 * heads * D] (rows contiguous); cos, sin: [T, D] float32.
    Returns q and k rotated and v, each a contiguous [T, heads, D]."""
    tokens = qkv.shape[0]
    dim = qkv.shape[1] // (3 * heads)
    out = torch.empty((3, tokens, heads, dim), dtype=qkv.dtype, device=qkv.device)
    if tokens:
        if qkv.stride(-1) != 1:
            qkv = qkv.contiguous()
        cos, sin = cos.float().contiguous(), sin.float().contiguous()
        _split_rotate_kernel[(tokens, 3)](
            qkv, out, cos, sin, qkv.stride(0), heads * dim, cos.stride(0), tokens, heads,
            HEADS=triton.next_power_of_2(heads), DIM=dim,
        )  # fmt: skip
    return out.unbind(0)
