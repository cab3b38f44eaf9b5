"""The text decoder's partial, interleaved rotary embedding of queries and keys, and the write of
the step's keys and values to their cache slots, in one launch. The reference takes about ten
launches for the rotation (slices, products, a stack, a concatenation) and two copies. In a decode
step, where a launch is a few microseconds, the fast path had been three (rotation, two copies):
5.0 us at one row, 1.1 us as one (BENCHMARKS.md, session 7)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashsight.engine.kernels.dependent_launch import enabled as pdl_enabled, wait_for_previous


@triton.jit
def _rotated(ptr, mask, cos_ptr, sin_ptr, HEADS: tl.constexpr, ROTARY: tl.constexpr):
    """The rotated first ROTARY channels of HEADS heads at ptr ([HEADS, ROTARY] pointers): channel
    pairs (2i, 2i+1). Each head's rotated channels are loaded as one contiguous run and split into
    pairs in registers: loading the even and odd channels as two strided runs ran at a twentieth
    of the bandwidth (BENCHMARKS.md, session 6)."""
    x = tl.load(ptr, mask=mask, other=0.0)
    dtype = x.dtype
    cos = tl.broadcast_to(tl.load(cos_ptr).to(tl.float32), (HEADS, ROTARY))
    sin = tl.broadcast_to(tl.load(sin_ptr).to(tl.float32), (HEADS, ROTARY))
    even, odd = tl.split(tl.reshape(x.to(tl.float32), (HEADS, ROTARY // 2, 2)))
    cos_e, cos_o = tl.split(tl.reshape(cos, (HEADS, ROTARY // 2, 2)))
    sin_e, sin_o = tl.split(tl.reshape(sin, (HEADS, ROTARY // 2, 2)))
    # Each product and the sum round to the model's dtype, as the reference's separate ops do.
    new_even = ((even * cos_e).to(dtype).to(tl.float32) + (-odd * sin_e).to(dtype).to(tl.float32)).to(dtype)
    new_odd = ((odd * cos_o).to(dtype).to(tl.float32) + (even * sin_o).to(dtype).to(tl.float32)).to(dtype)
    return tl.reshape(tl.join(new_even, new_odd), (HEADS, ROTARY))


@triton.jit
def _rope_store_kernel(
    q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, keys_ptr, values_ptr, slots_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ct, stride_slot, stride_cache_h,
    q_heads, k_heads, dim, HEADS: tl.constexpr, K_HEADS: tl.constexpr, ROTARY: tl.constexpr, REST: tl.constexpr,
    DIM: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """One token: axis 1 = 0 rotates its query heads in place; = 1 rotates its key heads in place
    and writes them, whole, to the token's cache slot; = 2 writes its value heads there."""
    wait_for_previous(PDL)
    token = tl.program_id(0).to(tl.int64)
    part = tl.program_id(1)
    # Triton merges names bound in both arms of a branch, so each arm names its own tensors.
    if part == 0:
        qh = tl.arange(0, HEADS)[:, None]
        q_chans = tl.arange(0, ROTARY)[None, :]
        q_ptrs = q_ptr + token * stride_qt + qh * stride_qh + q_chans
        q_angles = token * stride_ct + q_chans
        q_rot = _rotated(q_ptrs, qh < q_heads, cos_ptr + q_angles, sin_ptr + q_angles, HEADS, ROTARY)
        tl.store(q_ptrs, q_rot, mask=qh < q_heads)
    elif part == 1:
        kh = tl.arange(0, K_HEADS)[:, None]
        k_cache = tl.load(slots_ptr + token) * stride_slot + kh * stride_cache_h
        k_chans = tl.arange(0, ROTARY)[None, :]
        k_ptrs = k_ptr + token * stride_kt + kh * stride_kh + k_chans
        k_angles = token * stride_ct + k_chans
        k_rot = _rotated(k_ptrs, kh < k_heads, cos_ptr + k_angles, sin_ptr + k_angles, K_HEADS, ROTARY)
        tl.store(k_ptrs, k_rot, mask=kh < k_heads)
        tl.store(keys_ptr + k_cache + k_chans, k_rot, mask=kh < k_heads)
        if REST > 0:  # the channels past the rotated ones, copied as they are
            rest = ROTARY + tl.arange(0, REST)[None, :]
            rest_ok = (kh < k_heads) & (rest < dim)
            k_rest = tl.load(k_ptr + token * stride_kt + kh * stride_kh + rest, mask=rest_ok)
            tl.store(keys_ptr + k_cache + rest, k_rest, mask=rest_ok)
    else:
        vh = tl.arange(0, K_HEADS)[:, None]
        v_cache = tl.load(slots_ptr + token) * stride_slot + vh * stride_cache_h
        v_chans = tl.arange(0, DIM)[None, :]
        v_ok = (vh < k_heads) & (v_chans < dim)
        v_row = tl.load(v_ptr + token * stride_vt + vh * stride_vh + v_chans, mask=v_ok)
        tl.store(values_ptr + v_cache + v_chans, v_row, mask=v_ok)


def apply_rope_and_store_(q, k, v, cos, sin, keys: torch.Tensor, values: torch.Tensor, slots: torch.Tensor) -> None:
    """Rotate q [T, Hq, D] and k [T, Hk, D] (channels contiguous) in place over the first
    cos.shape[-1] channels (cos, sin: [T, rotary_dim] in q's dtype), then keys[slots] = k and
    values[slots] = v (keys, values: [slots, Hk, D], contiguous; slots: [T] int64)."""
    tokens, q_heads, dim = q.shape
    if tokens == 0:
        return
    cos, sin, slots = cos.contiguous(), sin.contiguous(), slots.contiguous()
    k_heads, rotary = k.shape[1], cos.shape[-1]
    pdl = pdl_enabled(q)
    _rope_store_kernel[(tokens, 3)](
        q, k, v, cos, sin, keys, values, slots, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0),
        v.stride(1), cos.stride(0), keys.stride(0), keys.stride(1), q_heads, k_heads, dim,
        HEADS=triton.next_power_of_2(q_heads), K_HEADS=triton.next_power_of_2(k_heads), ROTARY=rotary,
        REST=triton.next_power_of_2(dim - rotary) if dim > rotary else 0, DIM=triton.next_power_of_2(dim),
        PDL=pdl, launch_pdl=pdl > 0,
    )  # fmt: skip
