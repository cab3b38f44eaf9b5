"""SwiGLU's gate: silu(gate) * up from the fused gate_up projection, in one pass."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashsight.engine.kernels.dependent_launch import enabled as pdl_enabled, wait_for_previous


@triton.jit
def silu_mul(gate, up):
    """silu(gate) * up for gate and up in the model's dtype, rounded where the reference's
    separate silu and product round."""
    g = gate.to(tl.float32)
    silu = (g / (1.0 + tl.exp(-g))).to(gate.dtype)
    return (silu.to(tl.float32) * up.to(tl.float32)).to(gate.dtype)


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, stride_x, stride_out, n, BLOCK: tl.constexpr, PDL: tl.constexpr):
    wait_for_previous(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * stride_x + n + cols, mask=mask, other=0.0)
    tl.store(out_ptr + row * stride_out + cols, silu_mul(gate, up), mask=mask)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up: [rows, 2n] (gate, then up) -> [rows, n]."""
    rows = gate_up.reshape(-1, gate_up.shape[-1]).contiguous()
    n = rows.shape[1] // 2
    out = torch.empty((rows.shape[0], n), dtype=rows.dtype, device=rows.device)
    block = 1024
    pdl = pdl_enabled(rows)
    _silu_and_mul_kernel[(rows.shape[0], triton.cdiv(n, block))](
        rows, out, rows.stride(0), out.stride(0), n, BLOCK=block, PDL=pdl, launch_pdl=pdl > 0
    )  # fmt: skip
    return out.view(*gate_up.shape[:-1], n)
