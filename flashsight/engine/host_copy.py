"""Small tensors from Python lists to the GPU without waiting for it.

A plain `torch.tensor(values, device=cuda)` is a blocking copy: the CPU waits until the GPU has
finished everything queued before it. The engine builds step N+1 while the GPU still runs step
N, so its inputs go through pinned memory and an asynchronous copy instead; PyTorch's pinned
allocator keeps the host buffer alive until the copy is done.
"""

from __future__ import annotations

import torch


def to_device(values, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`values` (a list, nested lists, or a CPU tensor) on `device`, copied without a sync."""
    host = values.to(dtype) if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


class HostTokens:
    """A step's sampled token ids on their way back to the CPU: the copy is queued behind the
    step's kernels, and `tolist` waits for that copy alone."""

    def __init__(self, tokens: torch.Tensor):
        self.on_device = tokens
        if tokens.device.type == "cuda":
            self._host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
            self._host.copy_(tokens, non_blocking=True)
            self._ready = torch.cuda.Event()
            self._ready.record()
        else:
            self._host, self._ready = tokens, None

    def tolist(self) -> list[int]:
        if self._ready is not None:
            self._ready.synchronize()
        return self._host.tolist()
