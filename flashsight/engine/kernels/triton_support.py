"""Whether Triton kernels can run here. Triton ships with CUDA builds of PyTorch on Linux; a CPU
build on another platform may lack it, and then every op stays on its PyTorch reference."""

from __future__ import annotations

import functools


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
