"""The text decoder's partial, interleaved rotary embedding, applied to queries and keys in place
in one launch (the reference takes about ten: slices, products, a stack, a concatenation)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, cos_ptr, sin_ptr, stride_qt, stride_qh, stride_kt, stride_kh, stride_ct,
    q_heads, k_heads, q_blocks, HEADS: tl.constexpr, HALF: tl.constexpr,
):  # fmt: skip
    """One token's block of HEADS query heads (program axis 1 < q_blocks) or key heads: rotate
    channel pairs (2i, 2i+1), i < HALF; the rest stays."""
    token = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    if block < q_blocks:
        base, stride_h, heads = q_ptr + token * stride_qt, stride_qh, q_heads
    else:
        base, stride_h, heads = k_ptr + token * stride_kt, stride_kh, k_heads
        block -= q_blocks
    h = block * HEADS + tl.arange(0, HEADS)[:, None]
    pairs = tl.arange(0, HALF)[None, :]
    mask = h < heads
    even_ptr = base + h * stride_h + 2 * pairs
    even = tl.load(even_ptr, mask=mask, other=0.0)
    odd = tl.load(even_ptr + 1, mask=mask, other=0.0)
    dtype = even.dtype
    cos_e = tl.load(cos_ptr + token * stride_ct + 2 * pairs).to(tl.float32)
    cos_o = tl.load(cos_ptr + token * stride_ct + 2 * pairs + 1).to(tl.float32)
    sin_e = tl.load(sin_ptr + token * stride_ct + 2 * pairs).to(tl.float32)
    sin_o = tl.load(sin_ptr + token * stride_ct + 2 * pairs + 1).to(tl.float32)
    e, o = even.to(tl.float32), odd.to(tl.float32)
    # Each product and the sum round to the model's dtype, as the reference's separate ops do.
    new_even = ((e * cos_e).to(dtype).to(tl.float32) + (-o * sin_e).to(dtype).to(tl.float32)).to(dtype)
    new_odd = ((o * cos_o).to(dtype).to(tl.float32) + (e * sin_o).to(dtype).to(tl.float32)).to(dtype)
    tl.store(even_ptr, new_even, mask=mask)
    tl.store(even_ptr + 1, new_odd, mask=mask)


def apply_rope_(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """q: [T, Hq, D], k: [T, Hk, D] (channels contiguous), rotated in place over cos.shape[-1]
    channels; cos, sin: [T, rotary_dim] in q's dtype."""
    tokens, q_heads, _ = q.shape
    if tokens == 0:
        return
    cos, sin = cos.contiguous(), sin.contiguous()
    k_heads = k.shape[1]
    # A prompt-sized step: a program per token and part, as a program per head moved 128 bytes
    # and ran at a third of the bandwidth. A decode step: a few heads per program, so a handful
    # of tokens still spread over the GPU.
    heads = triton.next_power_of_2(max(q_heads, k_heads)) if tokens >= 256 else 2
    q_blocks = triton.cdiv(q_heads, heads)
    _rope_kernel[(tokens, q_blocks + triton.cdiv(k_heads, heads))](
        q, k, cos, sin, q.stride(0), q.stride(1), k.stride(0), k.stride(1), cos.stride(0),
        q_heads, k_heads, q_blocks, HEADS=heads, HALF=cos.shape[-1] // 2,
    )  # fmt: skip
