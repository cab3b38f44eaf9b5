"""The model's fusable operations and attention, as two interchangeable sets: the PyTorch
reference (the arithmetic of transformers, op for op) and the fast set (Triton kernels that
compute the same in fewer launches, and SDPA's fastest backend on a GPU where it beats them).
The model takes one set; `pick_ops` decides which."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flashsight.engine.kernels import flash4
from flashsight.engine.kernels.triton_support import triton_available
from flashsight.engine.kernels.varlen_spans import VarlenSpans, same_length_runs


class TorchOps:
    name = "torch"

    @staticmethod
    def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, weight, bias)

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

    @classmethod
    def linear_add_rms_norm(cls, residual, x, weight, w1, eps: float, w2=None):
        """add_rms_norm(residual, linear(x, weight), w1, eps, w2): a projection and the norm after it."""
        return cls.add_rms_norm(residual, cls.linear(x, weight), w1, eps, w2)

    @classmethod
    def add_then_rms_norm(cls, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, eps: float):
        """x + y, and norm(that sum; weight): a pre-norm block's residual add and the next norm."""
        x = x + y
        return x, cls.rms_norm(x, weight, eps)

    @staticmethod
    def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        return _partial_rope(q, cos, sin), _partial_rope(k, cos, sin)

    @classmethod
    def rope_and_store(cls, q, k, v, cos, sin, keys: torch.Tensor, values: torch.Tensor, slots: torch.Tensor):
        """Rotate q and k, write k and v to their cache slots (keys, values: [slots, kv_heads,
        head_dim]; slots: [T] int64); returns the rotated q and k."""
        q, k = cls.apply_rope(q, k, cos, sin)
        keys.index_copy_(0, slots, k)
        values.index_copy_(0, slots, v)
        return q, k

    @staticmethod
    def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    @classmethod
    def linear_silu_and_mul(cls, x: torch.Tensor, gate_up: torch.Tensor) -> torch.Tensor:
        """SwiGLU's gated activations from the fused gate/up weight [2n, k]."""
        return cls.silu_and_mul(cls.linear(x, gate_up))

    @staticmethod
    def paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, page_size: int) -> torch.Tensor:
        from flashsight.engine.kernels.paged_decode import paged_decode_attention_reference

        return paged_decode_attention_reference(q, k_cache, v_cache, block_tables, context_lens, page_size)


    @staticmethod
    def varlen_attention(q, k, v, spans: VarlenSpans, causal: bool, out=None) -> torch.Tensor:
        from flashsight.engine.kernels.prefill_attention import varlen_attention_reference

        return varlen_attention_reference(q, k, v, spans, causal, out)

    @staticmethod
    def vision_qkv(qkv: torch.Tensor, heads: int, cos: torch.Tensor, sin: torch.Tensor):
        """The vision tower's qkv projection [T, 3 * heads * D] split into q, k and v
        ([T, heads, D] each), q and k rotated; cos, sin: [T, D] float32."""
        q, k, v = qkv.view(qkv.shape[0], 3, heads, -1).unbind(1)
        return _rotate_vision(q, cos, sin), _rotate_vision(k, cos, sin), v

    @classmethod
    def image_attention(cls, q, k, v, spans: VarlenSpans) -> torch.Tensor:
        """Each image's patches attend to all of that image's patches, and to nothing else."""
        return cls.varlen_attention(q, k, v, spans, causal=False)


class TritonOps(TorchOps):
    name = "triton"

    @staticmethod
    def linear(x, weight, bias=None):
        from flashsight.engine.kernels.linear import linear

        return linear(x, weight, bias)

    @staticmethod
    def rms_norm(x, weight, eps):
        from flashsight.engine.kernels.norms import rms_norm

        return rms_norm(x, weight, eps)

    @staticmethod
    def add_rms_norm(x, y, w1, eps, w2=None):
        from flashsight.engine.kernels.norms import add_rms_norm

        return add_rms_norm(x, y, w1, eps, w2)

    @staticmethod
    def linear_add_rms_norm(residual, x, weight, w1, eps, w2=None):
        from flashsight.engine.kernels.linear import linear_add_rms_norm

        return linear_add_rms_norm(residual, x, weight, w1, eps, w2)

    @staticmethod
    def add_then_rms_norm(x, y, weight, eps):
        from flashsight.engine.kernels.norms import add_then_rms_norm

        return add_then_rms_norm(x, y, weight, eps)

    @staticmethod
    def rope_and_store(q, k, v, cos, sin, keys, values, slots):
        from flashsight.engine.kernels.rope import apply_rope_and_store_

        apply_rope_and_store_(q, k, v, cos, sin, keys, values, slots)
        return q, k

    @staticmethod
    def silu_and_mul(gate_up):
        from flashsight.engine.kernels.activation import silu_and_mul

        return silu_and_mul(gate_up)

    @staticmethod
    def linear_silu_and_mul(x, gate_up):
        from flashsight.engine.kernels.linear import linear_silu_and_mul

        return linear_silu_and_mul(x, gate_up)

    @staticmethod
    def paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, page_size: int) -> torch.Tensor:
        from flashsight.engine.kernels.paged_decode import paged_decode_attention

        return paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, page_size)


    @staticmethod
    def varlen_attention(q, k, v, spans: VarlenSpans, causal: bool, out=None) -> torch.Tensor:
        from flashsight.engine.kernels.prefill_attention import varlen_attention

        return varlen_attention(q, k, v, spans, causal, out)

    @staticmethod
    def vision_qkv(qkv, heads, cos, sin):
        """q and k rotated in place: the three are views of `qkv`, which SDPA takes as they are."""
        from flashsight.engine.kernels.vision_rope import rotate_vision_qk_

        return rotate_vision_qk_(qkv, heads, cos, sin)

    @staticmethod
    def image_attention(q, k, v, spans: VarlenSpans) -> torch.Tensor:
        """Through SDPA's cuDNN backend on a GPU: measured on the H200 at 2.4x the Triton varlen
        kernel for one 1024x1024 image's 5476 patches (564 against 232 TFLOP/s). Neighbouring
        images of one size go in one call, as a batch: each call costs ~0.2 ms of CPU, and a
        step of small screenshots made it the engine thread's largest cost (24 calls per image)."""
        if q.device.type != "cuda":
            return TorchOps.image_attention(q, k, v, spans)
        runs = same_length_runs(spans.q_starts, spans.q_lens)
        if len(runs) == 1 and runs[0][0] == 0 and runs[0][1] * runs[0][2] == q.shape[0]:
            return _sdpa_batch(q, k, v, *runs[0])
        out = torch.empty_like(q)
        for start, count, length in runs:
            _sdpa_into(out, q, k, v, start, count, length)
        return out


def _sdpa_batch(q, k, v, start: int, count: int, length: int) -> torch.Tensor:
    """`count` back-to-back sequences of `length` rows from `start`, each over its own rows'
    keys, attended as one batch: [count * length, heads, D] out."""
    return _sdpa_rows(q, k, v, start, count, length).reshape(count * length, *q.shape[1:])


def _sdpa_into(out, q, k, v, start: int, count: int, length: int) -> None:
    """The same written into `out`'s rows: one copy from SDPA's layout, not a reshape and a copy."""
    rows = out[start : start + count * length].view(count, length, *out.shape[1:])
    rows.copy_(_sdpa_rows(q, k, v, start, count, length))


def _sdpa_rows(q, k, v, start: int, count: int, length: int) -> torch.Tensor:
    """[count, length, heads, D], a view of SDPA's output."""
    rows = slice(start, start + count * length)
    batch = [t[rows].view(count, length, *t.shape[1:]).transpose(1, 2) for t in (q, k, v)]
    return _sdpa(*batch, causal=False).transpose(1, 2)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """[batch, heads, T, D] in and out, with cuDNN's kernel first, then FlashAttention's, then
    the memory-efficient one."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    try:
        backends = sdpa_kernel(order, set_priority=True)
    except TypeError:  # a PyTorch without priorities: any of the three
        backends = sdpa_kernel(order)
    with backends:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


class FA4Ops(TritonOps):
    """The fast set with FlashAttention-4 for the prompt attentions (the images' patches, the
    text chunks) wherever a step's sequences sit back to back; the rest as TritonOps."""

    name = "fa4"

    @staticmethod
    def varlen_attention(q, k, v, spans: VarlenSpans, causal: bool, out=None) -> torch.Tensor:
        out = torch.empty_like(q) if out is None else out
        if not flash4.varlen_attention(q, k, v, spans, causal, out):
            TritonOps.varlen_attention(q, k, v, spans, causal, out)
        return out

    @staticmethod
    def image_attention(q, k, v, spans: VarlenSpans) -> torch.Tensor:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # q may be a strided view
        if flash4.varlen_attention(q, k, v, spans, False, out):
            return out
        return TritonOps.image_attention(q, k, v, spans)


def pick_ops(kernels: str, device: torch.device) -> type[TorchOps]:
    """kernels: "auto" (Triton on a GPU, the reference on a CPU), "triton", "torch" or "fa4"
    (Triton with FlashAttention-4's prompt attention: a CUDA GPU and the flash-attn-4 package)."""
    if kernels == "torch" or (kernels == "auto" and device.type != "cuda"):
        return TorchOps
    if kernels == "fa4" and device.type != "cuda":
        raise RuntimeError("kernels='fa4' needs a CUDA GPU")
    if not triton_available():
        if kernels in ("triton", "fa4"):
            raise RuntimeError(f"kernels={kernels!r} was asked for, but Triton is not installed")
        return TorchOps
    if kernels == "fa4":
        flash4.forward()  # an ImportError here, at start-up, says what is missing
        return FA4Ops
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
