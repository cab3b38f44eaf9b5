"""The vision tower merges each 2x2 block of patches as transformers does, through its downsampling
convolution, though it computes it as one matrix product, with the weight as loaded or laid out
for the product."""

from __future__ import annotations

import torch

from flashsight.engine.config import EngineConfig
from flashsight.engine.loader import load_checkpoint


@torch.inference_mode()
def test_block_merge_is_the_downsampling_convolution(tiny_model_dir):
    tower = load_checkpoint(EngineConfig(model=tiny_model_dir, device="cpu", dtype="fp32")).model.model.visual
    hidden, merge = tower.downsample.in_channels, tower.merge
    torch.manual_seed(0)
    with torch.no_grad():
        tower.downsample.bias.normal_()  # a checkpoint's bias may be anything; the tiny one's is small
    patches = torch.randn(12 * merge * merge, hidden)  # 12 blocks, each block's patches in a row
    blocks = patches.view(-1, merge, merge, hidden).permute(0, 3, 1, 2)
    expected = tower.downsample(blocks).view(12, -1)
    torch.testing.assert_close(tower._merge_blocks(patches), expected, rtol=1e-5, atol=1e-5)
    weight = tower.downsample.weight
    tower.lay_out_merge_weight()  # as use_ops does, whatever the op set
    assert tower.downsample.weight.permute(0, 2, 3, 1).is_contiguous()
    assert torch.equal(tower.downsample.weight, weight)
    torch.testing.assert_close(tower._merge_blocks(patches), expected, rtol=1e-5, atol=1e-5)
