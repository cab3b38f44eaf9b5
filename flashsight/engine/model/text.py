"""The GLM-4 text decoder with 3-D multimodal rotary positions (M-RoPE).

Norms, rotary embedding and the SwiGLU gate go through `ops` (flashsight.engine.kernels.ops): the
PyTorch reference by default, fused Triton kernels once `use_ops` picks them for a GPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from flashsight.engine.kernels.ops import TorchOps
from flashsight.engine.model.layers import InverseFrequencies, RMSNorm

# attend(layer_index, q [T, heads, d], k [T, kv_heads, d], v [T, kv_heads, d], cos, sin) -> [T, heads, d].
# The KV cache supplies it: it rotates q and k (ops.rope_and_store, which also stores k and v: one
# launch in the fast op set), then attends over the past.
AttendFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class TextAttention(nn.Module):
    def __init__(self, cfg, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.q_proj = nn.Linear(cfg.hidden_size, self.num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, self.num_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, self.num_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, cfg.hidden_size, bias=False)
        self.qkv: tuple[torch.Tensor, torch.Tensor] | None = None  # (weight, bias) once fused

    def fuse_qkv(self) -> None:
        """One projection instead of three: q, k and v weights become views of one matrix."""
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        offset = 0
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            rows = proj.weight.shape[0]
            proj.weight = nn.Parameter(weight[offset : offset + rows], requires_grad=False)
            proj.bias = nn.Parameter(bias[offset : offset + rows], requires_grad=False)
            offset += rows
        self.qkv = (weight, bias)

    def forward(self, x: torch.Tensor, cos, sin, attend: AttendFn, ops: type[TorchOps]) -> torch.Tensor:
        """The heads' outputs side by side, [T, heads * d], before the output projection (which
        the layer computes together with the norm after it)."""
        tokens = x.shape[0]
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        if self.qkv is not None:
            q, k, v = ops.linear(x, *self.qkv).split([q_size, kv_size, kv_size], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(tokens, self.num_heads, self.head_dim)
        k = k.view(tokens, self.num_kv_heads, self.head_dim)
        v = v.view(tokens, self.num_kv_heads, self.head_dim)
        return attend(self.layer_index, q, k, v, cos, sin).reshape(tokens, -1)


class TextMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, ops: type[TorchOps]) -> torch.Tensor:
        """The gated activations, before the down projection (which the layer computes together
        with the norm after it)."""
        return ops.linear_silu_and_mul(x, self.gate_up_proj.weight)


class DecoderLayer(nn.Module):
    """GLM-4's layer: besides the usual pre-norms, a norm after attention and after the MLP."""

    def __init__(self, cfg, layer_index: int):
        super().__init__()
        self.eps = cfg.rms_norm_eps
        self.self_attn = TextAttention(cfg, layer_index)
        self.mlp = TextMLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, self.eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, self.eps)
        self.post_self_attn_layernorm = RMSNorm(cfg.hidden_size, self.eps)
        self.post_mlp_layernorm = RMSNorm(cfg.hidden_size, self.eps)

    def forward(self, x, h, cos, sin, attend: AttendFn, ops: type[TorchOps], next_norm: torch.Tensor,
                keep: torch.Tensor | None = None):  # fmt: skip
        """x: the residual stream; h: x through this layer's input norm. Returns the new
        residual and it through `next_norm` (the next layer's input norm, or the final one):
        computed with the residual add, it costs no launch of its own. With `keep` (row
        indices), every row still attends and stores its keys and values, but only those rows
        go on through the rest of the layer, and only they are returned."""
        heads = self.self_attn(h, cos, sin, attend, ops)
        if keep is not None:
            if not len(keep):
                return x[:0], x[:0]
            heads, x = heads[keep], x[keep]
        x, h = ops.linear_add_rms_norm(x, heads, self.self_attn.o_proj.weight, self.post_self_attn_layernorm.weight,
                                       self.eps, self.post_attention_layernorm.weight)  # fmt: skip
        return ops.linear_add_rms_norm(x, self.mlp(h, ops), self.mlp.down_proj.weight, self.post_mlp_layernorm.weight,
                                       self.eps, next_norm)  # fmt: skip


class MRotaryEmbedding(nn.Module):
    """cos/sin for 3-D positions: each frequency band takes its angle from the temporal, height
    or width position, as `mrope_section` assigns the bands."""

    def __init__(self, cfg):
        super().__init__()
        rope = cfg.rope_parameters
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        dim = int(head_dim * rope.get("partial_rotary_factor", 1.0))
        self.inv_freq = InverseFrequencies(rope["rope_theta"], dim)
        self.section = list(rope.get("mrope_section", [8, 12, 12]))

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions: [3, T] -> cos, sin: [T, rotary_dim] in `dtype`."""
        freqs = positions[..., None].float() * self.inv_freq.on(positions.device)  # [3, T, dim/2]
        return self._bands(freqs.cos()).to(dtype), self._bands(freqs.sin()).to(dtype)

    def _bands(self, table: torch.Tensor) -> torch.Tensor:
        parts = [chunk[i % 3] for i, chunk in enumerate(table.split(self.section, dim=-1))]
        return torch.cat(parts, dim=-1).repeat_interleave(2, dim=-1)


class TextModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = MRotaryEmbedding(cfg)
        self.ops: type[TorchOps] = TorchOps

    def use_ops(self, ops: type[TorchOps]) -> None:
        """Switch to another op set; a fused one also gets fused q/k/v projections."""
        self.ops = ops
        if ops is not TorchOps:
            for layer in self.layers:
                if layer.self_attn.qkv is None:
                    layer.self_attn.fuse_qkv()

    def forward(self, x: torch.Tensor, positions: torch.Tensor, attend: AttendFn,
                keep: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """The final hidden states of every row, or with `keep` (row indices) of those rows only.

        Only the rows whose next token is wanted need the last layer past its attention: the
        other rows' keys and values, all the cache keeps of them, are stored by then. A prompt's
        last layer is thus ~one row, not ~1400: 1/40 of its text products spared, exactly."""
        cos, sin = self.rotary_emb(positions, x.dtype)
        norms = [layer.input_layernorm for layer in self.layers[1:]] + [self.norm]
        h = self.ops.rms_norm(x, self.layers[0].input_layernorm.weight, self.layers[0].eps)
        last = len(self.layers) - 1
        for index, (layer, next_norm) in enumerate(zip(self.layers, norms)):
            x, h = layer(x, h, cos, sin, attend, self.ops, next_norm.weight, keep if index == last else None)
        return h
