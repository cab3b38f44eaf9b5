"""Small building blocks shared by the vision tower and the text decoder.

Each mirrors the reference implementation's arithmetic, dtype casts included: exact fidelity to
transformers is what lets real weights answer well.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class InverseFrequencies:
    """RoPE's inverse frequencies, computed on first use on each device.

    Not a buffer: the model is built on the meta device and loaded by assignment, and these are
    derived from the config, not stored in checkpoints.
    """

    def __init__(self, theta: float, dim: int):
        self.theta, self.dim = theta, dim
        self._by_device: dict[torch.device, torch.Tensor] = {}

    def on(self, device: torch.device) -> torch.Tensor:
        if device not in self._by_device:
            exponents = torch.arange(0, self.dim, 2, dtype=torch.float) / self.dim
            self._by_device[device] = (1.0 / (self.theta**exponents)).to(device)
        return self._by_device[device]


def silu_and_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return nn.functional.silu(gate) * up
