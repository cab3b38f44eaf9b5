"""Checks of the Triton kernels against their PyTorch references, run on the CPU through Triton's
interpreter (TRITON_INTERPRET=1, set by tests/test_kernels.py before this starts: Triton reads it
when the kernels are defined). Prints one line per check; exits non-zero on the first failure.

The interpreter rounds float32 -> bfloat16 by truncation where GPUs round to nearest, so exact
comparisons run in float32 here; the device test compares bfloat16 on the GPU.
"""

from __future__ import annotations

import asyncio
import sys

import torch

from flashsight.engine.kernels.ops import TorchOps, TritonOps


def close(name: str, got: torch.Tensor, want: torch.Tensor, tolerance: float = 1e-5) -> None:
    error = (got.float() - want.float()).abs().max().item()
    print(f"{name}: max abs error {error:.2e}")
    if not error <= tolerance:
        sys.exit(f"{name}: {error} > {tolerance}")


def check_ops() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(7, 96), torch.randn(7, 96)
    w1, w2 = torch.randn(96), torch.randn(96)
    close("rms_norm", TritonOps.rms_norm(x, w1, 1e-5), TorchOps.rms_norm(x, w1, 1e-5))
    for got, want in zip(TritonOps.add_rms_norm(x, y, w1, 1e-5, w2), TorchOps.add_rms_norm(x, y, w1, 1e-5, w2)):
        close("add_rms_norm (two outputs)", got, want)
    close("add_rms_norm", TritonOps.add_rms_norm(x, y, w1, 1e-5), TorchOps.add_rms_norm(x, y, w1, 1e-5))
    for got, want in zip(TritonOps.add_then_rms_norm(x, y, w2, 1e-5), TorchOps.add_then_rms_norm(x, y, w2, 1e-5)):
        close("add_then_rms_norm", got, want)
    gate_up = torch.randn(5, 2 * 1100)  # more than one column block
    close("silu_and_mul", TritonOps.silu_and_mul(gate_up), TorchOps.silu_and_mul(gate_up))
    for tokens in (3, 300):  # a decode-sized step, a prompt-sized one
        for dim, rotary in ((32, 16), (32, 32), (24, 8)):  # half rotated (as GLM), all, a head not a power of 2
            qkv = torch.randn(tokens, 8 * dim)  # q, k, v are strided views of one projection, as in the model
            q, k, v = (part.view(tokens, -1, dim) for part in qkv.split([4 * dim, 2 * dim, 2 * dim], dim=-1))
            angles = torch.randn(tokens, rotary // 2)
            cos, sin = angles.cos().repeat_interleave(2, -1), angles.sin().repeat_interleave(2, -1)
            slots = torch.randperm(2 * tokens)[:tokens]
            caches = [torch.zeros(2 * tokens, 2, dim) for _ in range(4)]
            want_q, want_k = TorchOps.rope_and_store(q.clone(), k.clone(), v, cos, sin, caches[0], caches[1], slots)
            got_q, got_k = TritonOps.rope_and_store(q, k, v, cos, sin, caches[2], caches[3], slots)
            label = f"rope and store, {tokens} tokens, {rotary} of {dim} channels"
            for name, got, want in (("queries", got_q, want_q), ("keys", got_k, want_k), ("key cache", caches[2], caches[0]),
                                    ("value cache", caches[3], caches[1])):  # fmt: skip
                close(f"{label} ({name})", got, want)
            if got_q.data_ptr() != q.data_ptr() or not torch.equal(k, want_k):
                sys.exit("rope and store must rotate q and k in place")
    qkv = torch.randn(5, 3 * 3 * 16)  # the vision tower's projection: 3 heads (padded to 4) of 16
    angles = torch.randn(5, 8)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    want = TorchOps.vision_qkv(qkv.clone(), 3, cos, sin)
    got = TritonOps.vision_qkv(qkv, 3, cos, sin)
    for name, got_part, want_part in zip(("queries", "keys", "values"), got, want):
        close(f"vision rope ({name})", got_part, want_part)
        if got_part.untyped_storage().data_ptr() != qkv.untyped_storage().data_ptr():
            sys.exit("vision rope must rotate q and k in place and leave all three views of the projection")


def check_skinny_matmul() -> None:
    from flashsight.engine.kernels.skinny_matmul import SkinnyPlan, plan_for, skinny_linear

    torch.manual_seed(3)
    # one slice written straight out; slices summed by the second pass, the last one short;
    # the launches plan_for picks for the decoder's output projection (here one 256-deep step),
    # q/k/v (one slice of 256-deep steps) and down (two slices of 256-deep steps, here uneven)
    for rows, n, k, plan in ((3, 100, 96, SkinnyPlan(64, 32, 1, 4, 2)), (16, 70, 200, SkinnyPlan(32, 32, 3, 4, 2)),
                             (1, 128, 256, plan_for(4096, 4096)), (1, 100, 512, plan_for(4608, 4096)),
                             (2, 96, 640, plan_for(4096, 13696))):  # fmt: skip
        x, weight, bias = torch.randn(rows, k), torch.randn(n, k), torch.randn(n)
        for b in (None, bias):
            close(f"skinny matmul {rows}x{k} @ {k}x{n}, plan {tuple(plan)}, bias {b is not None}",
                  skinny_linear(x, weight, b, plan), TorchOps.linear(x, weight, b), 1e-4)  # fmt: skip
    x, weight = torch.randn(5, 64), torch.randn(48, 64)
    close("linear, a decode-sized batch", TritonOps.linear(x, weight), TorchOps.linear(x, weight), 1e-4)
    x = torch.randn(40, 64)  # past the kernel's rows: PyTorch's product
    close("linear, a prompt-sized batch", TritonOps.linear(x, weight), TorchOps.linear(x, weight), 1e-4)
    weight, w1, w2 = torch.randn(96, 300), torch.randn(96), torch.randn(96)  # 300 deep: slices summed in the norm
    for rows in (3, 40):
        x, residual = torch.randn(rows, 300), torch.randn(rows, 96)
        for got, want in zip(TritonOps.linear_add_rms_norm(residual, x, weight, w1, 1e-5, w2),
                             TorchOps.linear_add_rms_norm(residual, x, weight, w1, 1e-5, w2)):  # fmt: skip
            close(f"linear then add_rms_norm, {rows} rows", got, want, 1e-4)
    gate_up = torch.randn(2 * 70, 256) / 16  # 70 outputs: the last program's pairs are partly past the end
    for rows in (1, 7, 40):  # the gated kernel, then (40 rows) the product followed by the gate
        x = torch.randn(rows, 256)
        close(f"linear then silu_and_mul, {rows} rows", TritonOps.linear_silu_and_mul(x, gate_up),
              TorchOps.linear_silu_and_mul(x, gate_up), 1e-4)  # fmt: skip


def check_paged_decode() -> None:
    from flashsight.engine.kernels.paged_decode import paged_decode_attention

    torch.manual_seed(1)
    page, pages = 16, 24
    for heads, kv_heads, dim in ((4, 2, 32), (32, 2, 128), (2, 1, 32)):
        k_cache, v_cache = torch.randn(pages * page, kv_heads, dim), torch.randn(pages * page, kv_heads, dim)
        q = torch.randn(4, heads, dim)
        tables = torch.randperm(pages)[:20].reshape(4, 5).to(torch.int32)
        lens = torch.tensor([1, 17, 80, 0], dtype=torch.int32)  # a padding row attends to nothing
        args = (q, k_cache, v_cache, tables, lens, page)
        want = TorchOps.paged_decode_attention(*args)
        got = TritonOps.paged_decode_attention(*args)
        close(f"paged decode {heads}/{kv_heads} heads", got, want)
        if got[3].abs().max() != 0:
            sys.exit("a padding row's output is not zero")
        for splits, tile in ((1, 64), (1, 128), (4, 32)):  # every launch shape the heuristics pick
            close(f"  splits {splits}, tile {tile}", paged_decode_attention(*args, splits=splits, tile=tile), want)


def check_varlen() -> None:
    from flashsight.engine.kernels.prefill_attention import varlen_attention, varlen_attention_reference
    from flashsight.engine.kernels.varlen_spans import VarlenSpans

    torch.manual_seed(2)
    q, k, v = torch.randn(200, 4, 32), torch.randn(260, 2, 32), torch.randn(260, 2, 32)
    # a fresh prompt, a one-token chunk after a cached prefix, a chunk after a cached prefix
    args = (q, k, v, VarlenSpans([0, 70, 75], [70, 5, 100], [0, 90, 100], [70, 10, 150]))
    for causal in (True, False):
        want = varlen_attention_reference(*args, causal=causal)
        # unmasked tiles before the diagonal, or none; the two query heads of a KV head in one block
        for tiles in (None, (64, 32, 4, 2), (32, 128, 4, 3), (16, 32, 4, 2, 2)):
            got = varlen_attention(*args, causal=causal, tiles=tiles)
            close(f"varlen attention (causal={causal}, tiles {tiles or 'default'})", got[:175], want[:175])


def check_engine(model_dir: str) -> None:
    """The tiny model, greedy, on an image and a question: Triton kernels (vision tower, prefill,
    decode runner) vs the reference ops."""
    from flashsight.engine.config import EngineConfig
    from flashsight.engine.engine import Engine
    from flashsight.engine.types import ChatRequest, SamplingParams

    async def tokens(kernels: str) -> list[int]:
        engine = Engine(EngineConfig(model=model_dir, device="cpu", kernels=kernels))
        from PIL import Image

        image = Image.linear_gradient("L").convert("RGB").resize((56, 84))
        messages = [{"role": "user", "content": [{"type": "image", "image": image},
                                                 {"type": "text", "text": "Count the apples."}]}]  # fmt: skip
        out: list[int] = []
        async for event in engine.generate(ChatRequest("k", messages, SamplingParams(max_tokens=12, temperature=0.0))):
            out += event.token_ids
        await engine.shutdown()
        return out

    reference, fused = asyncio.run(tokens("torch")), asyncio.run(tokens("triton"))
    print(f"engine: reference {reference}, triton {fused}")
    if reference != fused:
        sys.exit("greedy tokens differ between the reference ops and the Triton kernels")


if __name__ == "__main__":
    check_ops()
    check_skinny_matmul()
    check_paged_decode()
    check_varlen()
    check_engine(sys.argv[1])
    print("all kernel checks passed")
