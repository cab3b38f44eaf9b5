"""Registers, spills and shared memory of the engine's Triton kernels as built for the H100
(sm_90a), read from ptxas without a GPU: what limits how many programs a multiprocessor holds.

    python benchmarks/kernel_resources.py

Each kernel is compiled offline for the launch shapes the engine uses (and the alternatives a
sweep compared), then its PTX is assembled by Triton's own ptxas with -v. A multiprocessor has
65,536 registers and 228 KB of shared memory; "programs a multiprocessor" is the fewer of the
two limits (a launch of more programs than 132 times that runs in waves).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from flashsight.engine.kernels.paged_decode import _paged_decode_kernel
from flashsight.engine.kernels.prefill_attention import TILES, _prefill_kernel
from flashsight.engine.kernels.skinny_matmul import _skinny_kernel

TARGET = GPUTarget("cuda", 90, 32)
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def signature(kernel, pointers: dict[str, str], floats: tuple[str, ...], constexprs: dict) -> dict[str, str]:
    """Every argument's type: pointers as given, the named floats fp32, constexprs, the rest i32."""
    names = kernel.fn.__code__.co_varnames[: kernel.fn.__code__.co_argcount]
    return {name: pointers.get(name) or ("fp32" if name in floats else "constexpr" if name in constexprs else "i32")
            for name in names}  # fmt: skip


def resources(kernel, pointers: dict, floats: tuple, constexprs: dict, warps: int, stages: int,
              unaligned: tuple[str, ...] = ()) -> str:
    """As the launch in the engine compiles it: Triton specializes every pointer and integer
    that is a multiple of 16 (the engine's strides and sizes mostly are), which lets it pipeline
    16-byte loads through shared memory; `unaligned` names the integers that are not."""
    types = signature(kernel, pointers, floats, constexprs)
    aligned = {(index,): [["tt.divisibility", 16]] for index, (name, kind) in enumerate(types.items())
               if kind.startswith("*") or (kind == "i32" and name not in unaligned)}  # fmt: skip
    source = ASTSource(fn=kernel, signature=types, constexprs=constexprs, attrs=aligned)
    compiled = triton.compile(source, target=TARGET, options={"num_warps": warps, "num_stages": stages})
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as ptx:
        ptx.write(compiled.asm["ptx"])
    try:
        report = subprocess.run([PTXAS, "-v", "--gpu-name", "sm_90a", ptx.name, "-o", os.devnull],
                                capture_output=True, text=True, check=True).stderr  # fmt: skip
    finally:
        os.unlink(ptx.name)
    registers = int(re.search(r"Used (\d+) registers", report).group(1))
    stack = re.search(r"(\d+) bytes cumulative stack size", report)
    fit = min(65536 // (registers * 32 * warps), (228 * 1024) // max(compiled.metadata.shared, 1))
    return (f"{registers} registers, {stack.group(1) if stack else 0} bytes of stack, "
            f"{compiled.metadata.shared / 1024:.1f} KB shared: {fit} programs a multiprocessor")  # fmt: skip


def main() -> None:
    decode_pointers = {name: "*bf16" for name in ("q_ptr", "k_ptr", "v_ptr", "out_ptr")}
    decode_pointers |= {"tables_ptr": "*i32", "lens_ptr": "*i32", "part_acc_ptr": "*fp32", "part_stats_ptr": "*fp32"}
    for tile in (64, 128):
        for warps in (4, 8):
            shape = dict(GROUP_PAD=16, HEAD_DIM=128, PAGE=16, TILE=tile, SPLITS=1, PDL=1)
            print(f"paged decode, {tile}-key tile, {warps} warps: "
                  f"{resources(_paged_decode_kernel, decode_pointers, ('scale',), shape, warps, 3)}")  # fmt: skip
    skinny_pointers = {"x_ptr": "*bf16", "w_ptr": "*bf16", "bias_ptr": "*bf16", "out_ptr": "*bf16"}
    for label, (block_n, block_k, warps, stages), extra in (
        ("q/k/v, (64, 256, 1, 4, 3)", (64, 256, 4, 3), dict(HAS_BIAS=True, PARTIAL=False, GATED=False)),
        ("o and down, slices, (64, 256, 2, 4, 3)", (64, 256, 4, 3), dict(HAS_BIAS=False, PARTIAL=True, GATED=False)),
        ("gate/up, gated, (64, 128, 1, 4, 4)", (64, 128, 4, 4), dict(HAS_BIAS=False, PARTIAL=False, GATED=True)),
    ):  # fmt: skip
        shape = extra | dict(EVEN_K=True, BLOCK_T=16, BLOCK_N=block_n, BLOCK_K=block_k, PDL=1, PREFETCH=0)
        pointers = skinny_pointers | ({"out_ptr": "*fp32"} if extra["PARTIAL"] else {})
        print(f"split-K product, {label}: {resources(_skinny_kernel, pointers, (), shape, warps, stages, ('rows',))}")
    block_t, block_n, warps, stages, heads = TILES
    prefill_pointers = {name: "*bf16" for name in ("q_ptr", "k_ptr", "v_ptr", "out_ptr")}
    prefill_pointers |= {name: "*i32" for name in ("q_starts_ptr", "q_lens_ptr", "k_starts_ptr", "k_lens_ptr")}
    shape = dict(CAUSAL=True, HEAD_DIM=128, BLOCK_T=block_t, BLOCK_N=block_n, HEADS=heads)
    print(f"text prefill attention, tiles {TILES}: "
          f"{resources(_prefill_kernel, prefill_pointers, ('scale_log2',), shape, warps, stages)}")  # fmt: skip


if __name__ == "__main__":
    main()
