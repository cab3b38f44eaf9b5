"""The text decoder's partial, interleaved rotary embedding, applied to queries and keys in place
in one launch (the reference takes about ten: slices, products, a stack, a concatenation)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, cos_ptr, sin_ptr, stride_qt, stride_qh, stride_kt, stride_kh, stride_ct,
    q_heads, HALF: tl.constexpr,
):  # fmt: skip
    """One (token, head): rotate channel pairs (2i, 2i+1), i < HALF; the rest stays."""
    token = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    if head < q_heads:
        base = q_ptr + token * stride_qt + head * stride_qh
    else:
        base = k_ptr + token * stride_kt + (head - q_heads) * stride_kh
    pairs = tl.arange(0, HALF)
    even = tl.load(base + 2 * pairs)
    odd = tl.load(base + 2 * pairs + 1)
    dtype = even.dtype
    cos_e = tl.load(cos_ptr + token * stride_ct + 2 * pairs).to(tl.float32)
    cos_o = tl.load(cos_ptr + token * stride_ct + 2 * pairs + 1).to(tl.float32)
    sin_e = tl.load(sin_ptr + token * stride_ct + 2 * pairs).to(tl.float32)
    sin_o = tl.load(sin_ptr + token * stride_ct + 2 * pairs + 1).to(tl.float32)
    e, o = even.to(tl.float32), odd.to(tl.float32)
    # Each product and the sum round to the model's dtype, as the reference's separate ops do.
    new_even = ((e * cos_e).to(dtype).to(tl.float32) + (-o * sin_e).to(dtype).to(tl.float32)).to(dtype)
    new_odd = ((o * cos_o).to(dtype).to(tl.float32) + (e * sin_o).to(dtype).to(tl.float32)).to(dtype)
    tl.store(base + 2 * pairs, new_even)
    tl.store(base + 2 * pairs + 1, new_odd)


def apply_rope_(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """q: [T, Hq, D], k: [T, Hk, D] (channels contiguous), rotated in place over cos.shape[-1]
    channels; cos, sin: [T, rotary_dim] in q's dtype."""
    tokens, q_heads, _ = q.shape
    if tokens == 0:
        return
    cos, sin = cos.contiguous(), sin.contiguous()
    _rope_kernel[(tokens, q_heads + k.shape[1])](
        q, k, cos, sin, q.stride(0), q.stride(1), k.stride(0), k.stride(1), cos.stride(0),
        q_heads, HALF=cos.shape[-1] // 2,
    )  # fmt: skip
