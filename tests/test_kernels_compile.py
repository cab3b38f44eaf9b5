"""The decode path's Triton kernels compile for the H100/H200 (sm_90), down to a cubin, on this
CPU-only machine. Triton's interpreter (test_kernels.py) runs kernels as Python and accepts code
the compiler rejects, e.g. a name bound to tensors of two shapes in the two arms of a branch:
that reached the device once and cost a call there. Each case is a launch the engine makes; the
cases take either order of a kernel's wait and its trigger of the next (dependent_launch)."""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton", reason="Triton ships with CUDA builds of PyTorch; this build has none")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from flashsight.engine.kernels import activation, norms, paged_decode, rope, skinny_matmul  # noqa: E402
from flashsight.engine.kernels.dependent_launch import TRIGGER_FIRST, WAIT_FIRST  # noqa: E402

SKINNY = {"HAS_BIAS": False, "PARTIAL": False, "EVEN_K": True, "GATED": False, "BLOCK_T": 16, "BLOCK_N": 64,
          "BLOCK_K": 128, "PDL": TRIGGER_FIRST, "PREFETCH": 512}  # fmt: skip
CASES = {  # name: (kernel, pointer element types other than bf16, float arguments, constexprs)
    "rope and store": (rope._rope_store_kernel, {"slots_ptr": "i64"}, (),
                       {"HEADS": 32, "K_HEADS": 2, "ROTARY": 64, "REST": 64, "DIM": 128, "PDL": TRIGGER_FIRST}),
    "rope and store, whole heads rotated": (rope._rope_store_kernel, {"slots_ptr": "i64"}, (),
                                            {"HEADS": 32, "K_HEADS": 2, "ROTARY": 128, "REST": 0, "DIM": 128, "PDL": False}),
    "skinny product": (skinny_matmul._skinny_kernel, {}, (), {**SKINNY, "HAS_BIAS": True}),
    "skinny product, slices": (skinny_matmul._skinny_kernel, {"out_ptr": "fp32"}, (), {**SKINNY, "PARTIAL": True}),
    "skinny product, gated": (skinny_matmul._skinny_kernel, {}, (), {**SKINNY, "GATED": True}),
    "skinny product, waiting first, no prefetch": (skinny_matmul._skinny_kernel, {}, (),
                                                   {**SKINNY, "PDL": WAIT_FIRST, "PREFETCH": 0}),
    "sum of slices": (skinny_matmul._sum_splits_kernel, {"part_ptr": "fp32"}, (),
                      {"SPLITS": 4, "HAS_BIAS": True, "BLOCK": 1024, "PDL": TRIGGER_FIRST}),
    "rms norm": (norms._rms_norm_kernel, {}, ("eps",), {"BLOCK": 4096, "PDL": TRIGGER_FIRST}),
    "add and norm of slices": (norms._add_rms_norm_kernel, {"y_ptr": "fp32"}, ("eps",),
                               {"NORM_Y": True, "SECOND": True, "SPLITS": 2, "BLOCK": 4096, "PDL": TRIGGER_FIRST}),
    "paged decode, split": (paged_decode._paged_decode_kernel, {"tables_ptr": "i32", "lens_ptr": "i32", "part_acc_ptr": "fp32",
                            "part_stats_ptr": "fp32"}, ("scale",),
                            {"GROUP_PAD": 16, "HEAD_DIM": 128, "PAGE": 16, "TILE": 64, "SPLITS": 8, "PDL": TRIGGER_FIRST}),
    "merge of splits": (paged_decode._merge_splits_kernel, {"part_acc_ptr": "fp32", "part_stats_ptr": "fp32"}, (),
                        {"HEAD_DIM": 128, "SPLITS": 8, "PDL": TRIGGER_FIRST}),
    "silu and mul": (activation._silu_and_mul_kernel, {}, (), {"BLOCK": 1024, "PDL": TRIGGER_FIRST}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_decode_kernel_compiles_for_sm90(case):
    kernel, pointers, floats, constexprs = CASES[case]
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*" + pointers.get(name, "bf16")
        else:
            signature[name] = "fp32" if name in floats else "i32"
    assert set(constexprs) <= set(signature), "a constexpr the kernel does not take"
    source = ASTSource(fn=kernel, signature=signature,
                       constexprs={(kernel.arg_names.index(n),): v for n, v in constexprs.items()})  # fmt: skip
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    assert len(compiled.asm["cubin"]) > 0
    ptx = compiled.asm["ptx"]
    if constexprs.get("PDL"):
        wait, trigger = ptx.index("griddepcontrol.wait"), ptx.index("griddepcontrol.launch_dependents")
        assert (trigger < wait) == (constexprs["PDL"] == TRIGGER_FIRST)
    if constexprs.get("PREFETCH"):  # asked of L2 before the wait, or it overlaps nothing
        assert ptx.index("cp.async.bulk.prefetch.L2") < ptx.index("griddepcontrol.wait")
