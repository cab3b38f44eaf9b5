"""The whole model: vision tower + text decoder + LM head, named as in the checkpoint."""

from __future__ import annotations

import torch
from torch import nn

from flashsight.engine.model.text import AttendFn, TextModel
from flashsight.engine.model.vision import VisionTower


class Glm4vModel(nn.Module):
    """Holds the two towers under the checkpoint's `model.` prefix."""

    def __init__(self, config):
        super().__init__()
        self.visual = VisionTower(config.vision_config)
        self.language_model = TextModel(config.text_config)


class Glm4vForConditionalGeneration(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = Glm4vModel(config)
        text = config.text_config
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.language_model.embed_tokens.weight

    def use_ops(self, ops) -> None:
        """Run both towers on this op set (flashsight.engine.kernels.ops)."""
        self.model.visual.use_ops(ops)
        self.model.language_model.use_ops(ops)

    def embed(self, input_ids: torch.Tensor, image_embeds: list[torch.Tensor]) -> torch.Tensor:
        """Token embeddings, with each image placeholder replaced by its image's embeddings, in order."""
        x = self.model.language_model.embed_tokens(input_ids)
        if image_embeds:
            mask = input_ids == self.config.image_token_id
            x = x.clone()
            x[mask] = torch.cat(image_embeds).to(x.dtype)
        return x

    def encode_images(self, pixel_values: torch.Tensor, grid_thw: list[tuple[int, int, int]]) -> list[torch.Tensor]:
        return self.model.visual(pixel_values.to(self.model.visual.patch_embed.proj.weight.dtype), grid_thw)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, attend: AttendFn,
                keep: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """x: [T, hidden] embeddings; positions: [3, T]. Returns final hidden states [T, hidden],
        or [len(keep), hidden] of the rows `keep` indexes."""
        return self.model.language_model(x, positions, attend, keep)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()
