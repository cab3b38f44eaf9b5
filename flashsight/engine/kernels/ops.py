"""The model's fusable operations and attention, as two interchangeable sets: the PyTorch
reference (the arithmetic of transformers, op for op) and the fast set (Triton kernels that
compute the same in fewer launches, and SDPA's fastest backend on a GPU where it beats them).
The model takes one set; `pick_ops` decides which."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flashsight.engine.kernels.triton_support import triton_available
from flashsight.engine.kernels.varlen_spans import VarlenSpans


class TorchOps:
    name = "torch"

    @staticmethod
    def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return weight * x.to(dtype)

    @classmethod
    def add_rms_norm(cls, x: torch.Tensor, y: torch.Tensor, w1: torch.Tensor, eps: float, w2: torch.Tensor | None = None):
        """x + norm(y; w1); with w2, also norm(that sum; w2) (the next sublayer's input)."""
        x = x + cls.rms_norm(y, w1, eps)
        return x if w2 is None else (x, cls.rms_norm(x, w2, eps))

    @staticmethod
    def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        return _partial_rope(q, cos, sin), _partial_rope(k, cos, sin)

    @staticmethod
    def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    @staticmethod
    def paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, page_size: int) -> torch.Tensor:
        from flashsight.engine.kernels.paged_decode import paged_decode_attention_reference

        return paged_decode_attention_reference(q, k_cache, v_cache, block_tables, context_lens, page_size)


    @staticmethod
    def varlen_attention(q, k, v, spans: VarlenSpans, causal: bool, out=None) -> torch.Tensor:
        from flashsight.engine.kernels.prefill_attention import varlen_attention_reference

        return varlen_attention_reference(q, k, v, spans, causal, out)

    @staticmethod
    def rotate_vision(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """The vision tower's rotation of q and k ([T, heads, D]); cos, sin: [T, D] float32."""
        return _rotate_vision(q, cos, sin), _rotate_vision(k, cos, sin)

    @classmethod
    def image_attention(cls, q, k, v, spans: VarlenSpans) -> torch.Tensor:
        """Each image's patches attend to all of that image's patches, and to nothing else."""
        return cls.varlen_attention(q, k, v, spans, causal=False)


class TritonOps(TorchOps):
    name = "triton"

    @staticmethod
    def rms_norm(x, weight, eps):
        from flashsight.engine.kernels.norms import rms_norm

        return rms_norm(x, weight, eps)

    @staticmethod
    def add_rms_norm(x, y, w1, eps, w2=None):
        from flashsight.engine.kernels.norms import add_rms_norm

        return add_rms_norm(x, y, w1, eps, w2)

    @staticmethod
    def apply_rope(q, k, cos, sin):
        from flashsight.engine.kernels.rope import apply_rope_

        apply_rope_(q, k, cos, sin)
        return q, k

    @staticmethod
    def silu_and_mul(gate_up):
        from flashsight.engine.kernels.activation import silu_and_mul

        return silu_and_mul(gate_up)

    @staticmethod
    def paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, page_size: int) -> torch.Tensor:
        from flashsight.engine.kernels.paged_decode import paged_decode_attention

        return paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, page_size)


    @staticmethod
    def varlen_attention(q, k, v, spans: VarlenSpans, causal: bool, out=None) -> torch.Tensor:
        from flashsight.engine.kernels.prefill_attention import varlen_attention

        return varlen_attention(q, k, v, spans, causal, out)

    @staticmethod
    def rotate_vision(q, k, cos, sin):
        from flashsight.engine.kernels.vision_rope import rotate_vision_

        rotate_vision_(q, k, cos, sin)
        return q, k

    @staticmethod
    def image_attention(q, k, v, spans: VarlenSpans) -> torch.Tensor:
        """Through SDPA's cuDNN backend on a GPU: measured on the H200 at 2.4x the Triton varlen
        kernel for one 1024x1024 image's 5476 patches (564 against 232 TFLOP/s)."""
        if q.device.type != "cuda":
            return TorchOps.image_attention(q, k, v, spans)
        out = torch.empty_like(q)
        for start, length in zip(spans.q_starts, spans.q_lens):
            rows = slice(start, start + length)
            out[rows] = _sdpa(q[rows], k[rows], v[rows], causal=False)
        return out


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """One sequence's attention, [T, heads, D] in and out, with cuDNN's kernel first, then
    FlashAttention's, then the memory-efficient one."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    try:
        backends = sdpa_kernel(order, set_priority=True)
    except TypeError:  # a PyTorch without priorities: any of the three
        backends = sdpa_kernel(order)
    with backends:
        attended = F.scaled_dot_product_attention(*(t.transpose(0, 1).unsqueeze(0) for t in (q, k, v)), is_causal=causal)
    return attended[0].transpose(0, 1)


def pick_ops(kernels: str, device: torch.device) -> type[TorchOps]:
    """kernels: "auto" (Triton on a GPU, the reference on a CPU), "triton" or "torch"."""
    if kernels == "torch" or (kernels == "auto" and device.type != "cuda"):
        return TorchOps
    if not triton_available():
        if kernels == "triton":
            raise RuntimeError("kernels='triton' was asked for, but Triton is not installed")
        return TorchOps
    return TritonOps


def rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    """The text decoder's rotation: neighbouring pairs (GPT-J layout)."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((-odd, even), dim=-1).flatten(-2)


def _rotate_vision(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # The reference rotates in float32 whatever the model dtype.
    xf = x.float()
    return (xf * cos.unsqueeze(1) + rotate_half(xf) * sin.unsqueeze(1)).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """The vision tower's rotation: halves swapped (NeoX layout)."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `cos.shape[-1]` channels of each head; pass the rest through.
    x: [tokens, heads, head_dim]; cos, sin: [tokens, rotary_dim] in x's dtype."""
    rotary_dim = cos.shape[-1]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    rot = rot * cos + rotate_interleaved(rot) * sin
    return torch.cat((rot, rest), dim=-1)
