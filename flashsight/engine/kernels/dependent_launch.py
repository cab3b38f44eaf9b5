"""Programmatic dependent launch (Hopper and later): a kernel launched this way may be scheduled
while the kernel before it on the stream is still finishing, and waits for it (griddepcontrol)
before it touches memory. A decode step is a chain of ~400 short launches, each a few
microseconds; this overlaps each launch's start-up with the end of the one before.

Every kernel launched with `enabled(...)` must start with `wait_for_previous(PDL)`: that wait is
what keeps its reads after the previous kernel's writes.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

_allowed = True


@triton.jit
def wait_for_previous(PDL: tl.constexpr):
    """Wait until the previous kernel on the stream has finished and its writes are visible, then
    let the next kernel be scheduled (it waits in turn before reading what this one writes)."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


def enabled(t: torch.Tensor) -> bool:
    """Whether kernels working on `t` launch as dependents (its device supports it)."""
    return _allowed and t.is_cuda and _supported(t.device.index)


def allow(on: bool) -> None:
    """Turn dependent launches off (or back on) for the process: for A/B measurements
    (benchmarks/inprocess.py --no-pdl), set before the engine starts."""
    global _allowed
    _allowed = on


@functools.cache
def _supported(index: int | None) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9
