"""Programmatic dependent launch (Hopper and later): a kernel launched this way may be scheduled
while the kernel before it on the stream is still finishing, and waits for it (griddepcontrol)
before it touches memory. A decode step is a chain of ~400 short launches, each a few
microseconds; this overlaps each launch's start-up with the end of the one before.

Every kernel launched with `enabled(...)` must start with `wait_for_previous(PDL)`: that wait is
what keeps its reads after the previous kernel's writes. Only what cannot depend on the kernel
before may come ahead of it (the products' weights, asked of L2).

The next kernel may be let in before this one's own wait (TRIGGER_FIRST) or after it
(WAIT_FIRST). Either is correct, since each kernel still waits for the whole of the one before
and that one for its own: the earlier trigger lets a product's programs sit on the GPU while
the small kernel before it still waits, so its weight prefetch starts a kernel sooner. The next
kernel is only let in once every program of this one has started, so waiting programs never
keep this one's from the multiprocessors.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

WAIT_FIRST, TRIGGER_FIRST = 1, 2
_allowed = True
_order = WAIT_FIRST  # TRIGGER_FIRST awaits its measurement (decode_step.py --sweep)


@triton.jit
def wait_for_previous(PDL: tl.constexpr):
    """Wait until the previous kernel on the stream has finished and its writes are visible, and
    let the next kernel be scheduled (it waits in turn before reading what this one writes)."""
    if PDL == 2:  # TRIGGER_FIRST (a Triton function reads no plain module globals)
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    elif PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


def enabled(t: torch.Tensor) -> int:
    """The PDL argument of kernels working on `t`: 0 when they launch as usual (the device lacks
    dependent launches, or they are turned off), else the order (WAIT_FIRST or TRIGGER_FIRST)."""
    return _order if _allowed and t.is_cuda and _supported(t.device.index) else 0


def allow(on: bool, order: int = WAIT_FIRST) -> None:
    """Turn dependent launches off (or back on, in an order) for the process: for A/B
    measurements (benchmarks/inprocess.py --no-pdl, decode_step.py --sweep), set before the
    kernels are captured."""
    global _allowed, _order
    _allowed, _order = on, order


@functools.cache
def _supported(index: int | None) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9
