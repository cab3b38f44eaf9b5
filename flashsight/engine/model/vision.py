"""The vision tower: patches of each image in, one embedding per merged 2x2 patch out."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from flashsight.engine.kernels.ops import TorchOps
from flashsight.engine.kernels.varlen_spans import VarlenSpans
from flashsight.engine.model.layers import InverseFrequencies, RMSNorm, silu_and_mul


class VisionMLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.gate_up: torch.Tensor | None = None  # both weights in one matrix, once fused

    def fuse_gate_up(self) -> None:
        """One product instead of two, its output gated in one pass: the two weights become
        views of one matrix."""
        weight = torch.cat([self.gate_proj.weight, self.up_proj.weight])
        rows = self.gate_proj.weight.shape[0]
        self.gate_proj.weight = nn.Parameter(weight[:rows], requires_grad=False)
        self.up_proj.weight = nn.Parameter(weight[rows:], requires_grad=False)
        self.gate_up = weight

    def forward(self, x: torch.Tensor, ops) -> torch.Tensor:
        if self.gate_up is not None:
            return ops.linear(ops.silu_and_mul(ops.linear(x, self.gate_up)), self.down_proj.weight)
        return self.down_proj(silu_and_mul(self.gate_proj(x), self.up_proj(x)))


class VisionAttention(nn.Module):
    def __init__(self, hidden: int, num_heads: int, bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.qkv = nn.Linear(hidden, hidden * 3, bias=bias)
        self.proj = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, spans: VarlenSpans, ops) -> torch.Tensor:
        q, k, v = ops.vision_qkv(ops.linear(x, self.qkv.weight, self.qkv.bias), self.num_heads, cos, sin)
        return ops.linear(ops.image_attention(q, k, v, spans).reshape(x.shape[0], -1), self.proj.weight)


class VisionBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.norm2 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = VisionAttention(cfg.hidden_size, cfg.num_heads, cfg.attention_bias)
        self.mlp = VisionMLP(cfg.hidden_size, cfg.out_hidden_size)

    def forward(self, x, h, cos, sin, spans: VarlenSpans, ops, next_norm: RMSNorm):
        """x: the residual stream; h: x through norm1. Returns the new residual and it through
        `next_norm` (the next block's norm1, or the tower's last norm), each norm computed with
        the residual add before it, in one pass."""
        x, h = ops.add_then_rms_norm(x, self.attn(h, cos, sin, spans, ops), self.norm2.weight, self.norm2.eps)
        return ops.add_then_rms_norm(x, self.mlp(h, ops), next_norm.weight, next_norm.eps)


class PatchMerger(nn.Module):
    def __init__(self, dim: int, context_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)
        self.post_projection_norm = nn.LayerNorm(dim)
        self.gate_proj = nn.Linear(dim, context_dim, bias=False)
        self.up_proj = nn.Linear(dim, context_dim, bias=False)
        self.down_proj = nn.Linear(context_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.post_projection_norm(self.proj(x)))
        return self.down_proj(silu_and_mul(self.gate_proj(x), self.up_proj(x)))


class PatchEmbed(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.in_channels = cfg.in_channels
        self.kernel = (cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_channels, cfg.hidden_size, kernel_size=self.kernel, stride=self.kernel)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # A convolution whose stride is its kernel is one matrix product over flattened patches
        # (the processor's rows are flattened in the weight's channel, time, row, column order);
        # as a product it runs on the matrix units, where cuDNN picks a far slower convolution.
        weight = self.proj.weight
        patches = pixels.reshape(-1, weight[0].numel()).to(weight.dtype)
        return F.linear(patches, weight.view(weight.shape[0], -1), self.proj.bias)


class PositionEmbedding(nn.Module):
    """A learned square grid of position embeddings, resampled bicubically to each image's grid.

    The resampled table depends only on the grid's shape, and images of one shape recur (one
    camera's photos, one screen's screenshots), so the last few shapes' tables are kept."""

    _KEPT_GRIDS = 8

    def __init__(self, cfg):
        super().__init__()
        side = cfg.image_size // cfg.patch_size
        self.position_embedding = nn.Embedding(side * side, cfg.hidden_size)
        self._by_grid: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()

    def forward(self, x: torch.Tensor, grid_thw: list[tuple[int, int, int]], merge: int) -> torch.Tensor:
        return x + torch.cat([self._table(h, w, merge, x.device).repeat(t, 1) for t, h, w in grid_thw])

    def _table(self, h: int, w: int, merge: int, device) -> torch.Tensor:
        table = self._by_grid.get((h, w))
        if table is None:
            table = self._by_grid[(h, w)] = self._resample(h, w, merge, device)
            if len(self._by_grid) > self._KEPT_GRIDS:
                self._by_grid.popitem(last=False)
        self._by_grid.move_to_end((h, w))
        return table

    def _resample(self, h: int, w: int, merge: int, device) -> torch.Tensor:
        """[h * w, hidden], rows in the processor's patch order."""
        h_pos, w_pos = patch_positions([(1, h, w)], merge, device)
        table = self.position_embedding.weight
        side = int(table.shape[0] ** 0.5)
        table_2d = table.view(side, side, -1).permute(2, 0, 1).unsqueeze(0).float()
        norm_w = ((w_pos.float() + 0.5) / w) * 2 - 1
        norm_h = ((h_pos.float() + 0.5) / h) * 2 - 1
        grid = torch.stack((norm_w, norm_h), dim=-1).view(1, -1, 1, 2)
        sampled = F.grid_sample(table_2d, grid, mode="bicubic", align_corners=False, padding_mode="border")
        return sampled.view(table.shape[1], -1).t().to(table.dtype)


class VisionTower(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.merge = cfg.spatial_merge_size
        self.out_hidden_size = cfg.out_hidden_size
        self.embeddings = PositionEmbedding(cfg)
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.merger = PatchMerger(cfg.out_hidden_size, cfg.intermediate_size)
        self.post_conv_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.downsample = nn.Conv2d(cfg.hidden_size, cfg.out_hidden_size, self.merge, stride=self.merge)
        self.post_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.ops: type[TorchOps] = TorchOps  # the reference until use_ops
        spatial_dim = cfg.hidden_size // cfg.num_heads // 2
        self.inv_freq = InverseFrequencies(cfg.rope_parameters["rope_theta"], spatial_dim)

    def forward(self, pixels: torch.Tensor, grid_thw: list[tuple[int, int, int]]) -> list[torch.Tensor]:
        """pixels: the processor's patch rows for all images; returns one tensor per image."""
        h_pos, w_pos = patch_positions(grid_thw, self.merge, pixels.device)
        seqlens = [t * h * w for t, h, w in grid_thw]
        x = self._norm(self.post_conv_layernorm, self.patch_embed(pixels))
        cos, sin = self.rotary(h_pos, w_pos)
        x = self.embeddings(x, grid_thw, self.merge)
        spans = VarlenSpans.square(seqlens)  # each image attends to itself
        h = self._norm(self.blocks[0].norm1, x)
        next_norms = [block.norm1 for block in self.blocks[1:]] + [self.post_layernorm]
        for block, next_norm in zip(self.blocks, next_norms):
            x, h = block(x, h, cos, sin, spans, self.ops, next_norm)
        x = self.merger(self._merge_blocks(h))
        return list(x.split([n // self.merge**2 for n in seqlens]))

    def _merge_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The downsampling convolution over each merge block's patches (consecutive rows, the
        block's own row-major order). Its stride is its kernel, so, as for the patch embedding,
        it is one matrix product over the blocks' rows laid side by side (no permuted copy of
        the activations for a convolution's layout); with the weight laid out for it (use_ops),
        the product reads the weight as it is."""
        weight = self.downsample.weight  # [out, hidden, merge, merge]
        flat = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
        return F.linear(x.reshape(-1, flat.shape[1]), flat, self.downsample.bias)

    def use_ops(self, ops: type[TorchOps]) -> None:
        """Switch to another op set; a fused one also gets fused gate/up projections."""
        self.ops = ops
        self.lay_out_merge_weight()  # the same values either way: no copy a call on any op set
        if ops is not TorchOps:
            for block in self.blocks:
                if block.mlp.gate_up is None:
                    block.mlp.fuse_gate_up()

    def lay_out_merge_weight(self) -> None:
        """The downsampling weight's same values and shape, stored as the block merge's product
        reads them: no copy of it a call."""
        weight = self.downsample.weight
        if not weight.permute(0, 2, 3, 1).is_contiguous():
            relaid = weight.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
            self.downsample.weight = nn.Parameter(relaid, requires_grad=False)

    def _norm(self, norm: RMSNorm, x: torch.Tensor) -> torch.Tensor:
        return self.ops.rms_norm(x, norm.weight, norm.eps)

    def rotary(self, h_pos: torch.Tensor, w_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq.on(h_pos.device)
        freqs_h = h_pos[:, None].float() * inv_freq
        freqs_w = w_pos[:, None].float() * inv_freq
        freqs = torch.cat((freqs_h, freqs_w), dim=-1)
        freqs = torch.cat((freqs, freqs), dim=-1)
        return freqs.cos(), freqs.sin()


def patch_positions(grid_thw, merge: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of every patch, in the processor's order: merge blocks row-major, then
    the patches inside each block row-major."""
    rows, cols = [], []
    for t, h, w in grid_thw:
        hh, ww = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        shape = (h // merge, merge, w // merge, merge)
        rows.append(hh.reshape(shape).transpose(1, 2).flatten().repeat(t))
        cols.append(ww.reshape(shape).transpose(1, 2).flatten().repeat(t))
    return torch.cat(rows), torch.cat(cols)
