"""The text decoder's partial, interleaved rotary embedding, applied to queries and keys in place
in one launch (the reference takes about ten: slices, products, a stack, a concatenation)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, cos_ptr, sin_ptr, stride_qt, stride_qh, stride_kt, stride_kh, stride_ct,
    q_heads, k_heads, HEADS: tl.constexpr, ROTARY: tl.constexpr,
):  # fmt: skip
    """One token's query heads (program axis 1 = 0) or key heads (= 1): rotate channel pairs
    (2i, 2i+1) of the first ROTARY channels; the rest stays. Each head's rotated channels are
    loaded and stored as one contiguous run and split into pairs in registers: loading the even
    and odd channels as two strided runs ran at a twentieth of the bandwidth (BENCHMARKS.md,
    session 6)."""
    token = tl.program_id(0).to(tl.int64)
    if tl.program_id(1) == 0:
        base, stride_h, heads = q_ptr + token * stride_qt, stride_qh, q_heads
    else:
        base, stride_h, heads = k_ptr + token * stride_kt, stride_kh, k_heads
    h = tl.arange(0, HEADS)[:, None]
    chans = tl.arange(0, ROTARY)[None, :]
    mask = h < heads
    ptr = base + h * stride_h + chans
    x = tl.load(ptr, mask=mask, other=0.0)
    dtype = x.dtype
    cos = tl.broadcast_to(tl.load(cos_ptr + token * stride_ct + chans).to(tl.float32), (HEADS, ROTARY))
    sin = tl.broadcast_to(tl.load(sin_ptr + token * stride_ct + chans).to(tl.float32), (HEADS, ROTARY))
    even, odd = tl.split(tl.reshape(x.to(tl.float32), (HEADS, ROTARY // 2, 2)))
    cos_e, cos_o = tl.split(tl.reshape(cos, (HEADS, ROTARY // 2, 2)))
    sin_e, sin_o = tl.split(tl.reshape(sin, (HEADS, ROTARY // 2, 2)))
    # Each product and the sum round to the model's dtype, as the reference's separate ops do.
    new_even = ((even * cos_e).to(dtype).to(tl.float32) + (-odd * sin_e).to(dtype).to(tl.float32)).to(dtype)
    new_odd = ((odd * cos_o).to(dtype).to(tl.float32) + (even * sin_o).to(dtype).to(tl.float32)).to(dtype)
    tl.store(ptr, tl.reshape(tl.join(new_even, new_odd), (HEADS, ROTARY)), mask=mask)


def apply_rope_(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """q: [T, Hq, D], k: [T, Hk, D] (channels contiguous), rotated in place over cos.shape[-1]
    channels; cos, sin: [T, rotary_dim] in q's dtype."""
    tokens, q_heads, _ = q.shape
    if tokens == 0:
        return
    cos, sin = cos.contiguous(), sin.contiguous()
    k_heads = k.shape[1]
    _rope_kernel[(tokens, 2)](
        q, k, cos, sin, q.stride(0), q.stride(1), k.stride(0), k.stride(1), cos.stride(0),
        q_heads, k_heads, HEADS=triton.next_power_of_2(max(q_heads, k_heads)), ROTARY=cos.shape[-1],
    )  # fmt: skip
