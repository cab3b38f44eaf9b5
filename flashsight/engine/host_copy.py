"""Host-to-GPU copies that do not stall the CPU.

`torch.tensor(values, device="cuda")` copies from pageable memory and then synchronizes with the
stream, so it waits for all the GPU work queued before it: a step that made such a copy per layer
could never get ahead of the GPU, and every kernel launch's CPU time showed up as GPU idle time.
Staged through pinned memory, the copy is queued like a kernel and the CPU moves on. (PyTorch's
pinned-memory cache keeps the staging buffer until the copy has run.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def to_device(values: Sequence[int] | torch.Tensor, device: torch.device, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """`values` (a list, or a CPU tensor that keeps its dtype) on `device`, queued without a sync."""
    tensor = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def staged(values: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A CPU tensor of `values` to copy into a GPU buffer with `copy_(..., non_blocking=True)`:
    pinned when the copy goes to a GPU, so it does not wait for the stream."""
    tensor = torch.tensor(values, dtype=dtype)
    return tensor.pin_memory() if device.type == "cuda" else tensor
