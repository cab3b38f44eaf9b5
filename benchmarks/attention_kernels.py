"""A W1 prompt's two attentions as the engine runs them, against FlashAttention-4's Hopper
kernels (GPU only): would a faster kernel take the ~1.5 ms a W1 prompt needs for 14 req/s?

    python benchmarks/attention_kernels.py [--images 1 6] [--prompts 1 6] [--repeats 20]

- image: n images of 5,476 patches (1024x1024), 12 heads of 128, each over its own patches. The
  engine's: SDPA's cuDNN kernel on strided views of the q/k/v projection's output, one call for
  all the images (`TritonOps.image_attention`).
- text: n W1 prompts of 1,394 tokens from their start, causal, 32 query heads over 2 KV heads.
  The engine's: its Triton varlen kernel (`TritonOps.varlen_attention`); SDPA's cuDNN kernel on
  the prompts as a batch (keys and values repeated per query head) beside it.
- FA4: `flash_attn.cute.flash_attn_varlen_func` on the same rows, when `flash_attn.cute` imports
  (pip's `flash-attn-4` with `nvidia-cutlass-dsl`; too big for one device call: `bash
  benchmarks/fa4_pack.sh` splits them into `.fa4a/` and `.fa4b/`, and its header says how to land
  them on a warm machine in two calls). Its first call compiles; that time is printed.

Each kernel: median of --repeats launches (CUDA events), TFLOP/s against the work (causal: half),
and the largest difference from the engine's output (bf16 noise is ~1e-2).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from profile_parts import cuda_ms  # benchmarks/ is the script's folder

from flashsight.engine.kernels.ops import TritonOps
from flashsight.engine.kernels.varlen_spans import VarlenSpans

IMAGE_PATCHES, IMAGE_HEADS = 5476, 12
PROMPT_TOKENS, TEXT_HEADS, TEXT_KV_HEADS = 1394, 32, 2
HEAD_DIM = 128


def load_fa4():
    try:
        from flash_attn.cute import flash_attn_varlen_func
    except Exception as exc:  # not installed, or its compiler's libraries are missing
        print(f"FA4: not available ({type(exc).__name__}: {str(exc)[:160]})")
        return None
    return flash_attn_varlen_func


def report(label: str, fn, flops: float, reference: torch.Tensor | None, repeats: int) -> None:
    try:
        began = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        first_s = time.perf_counter() - began
        ms = cuda_ms(fn, repeats)
    except Exception as exc:
        print(f"  {label}: failed ({type(exc).__name__}: {str(exc)[:200]})")
        return
    out = out[0] if isinstance(out, tuple) else out
    diff = "" if reference is None else f", max |diff| {(out.float() - reference.float()).abs().max().item():.2e}"
    print(f"  {label}: {ms:.3f} ms ({flops / ms / 1e9:.0f} TFLOP/s){diff}; first call {first_s:.2f} s", flush=True)


def cu_seqlens(count: int, length: int) -> torch.Tensor:
    return torch.arange(0, (count + 1) * length, length, device="cuda", dtype=torch.int32)


def image_case(images: int, fa4, repeats: int) -> None:
    rows = images * IMAGE_PATCHES
    qkv = torch.randn(rows, 3, IMAGE_HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    q, k, v = qkv.unbind(1)  # strided views, as the engine's vision tower passes them
    spans = VarlenSpans.square([IMAGE_PATCHES] * images)
    flops = 4 * images * IMAGE_PATCHES**2 * IMAGE_HEADS * HEAD_DIM
    print(f"image attention, {images} x {IMAGE_PATCHES} patches, {IMAGE_HEADS} heads:")
    engine_out = TritonOps.image_attention(q, k, v, spans)
    report("engine (cuDNN via SDPA)", lambda: TritonOps.image_attention(q, k, v, spans), flops, None, repeats)
    if fa4 is not None:
        cu = cu_seqlens(images, IMAGE_PATCHES)
        run = lambda qq, kk, vv: fa4(qq, kk, vv, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=IMAGE_PATCHES,  # noqa: E731
                                     max_seqlen_k=IMAGE_PATCHES, causal=False)  # fmt: skip
        report("FA4, strided views", lambda: run(q, k, v), flops, engine_out, repeats)
        qc, kc, vc = (t.contiguous() for t in (q, k, v))
        report("FA4, contiguous", lambda: run(qc, kc, vc), flops, engine_out, repeats)


def text_case(prompts: int, fa4, repeats: int) -> None:
    rows = prompts * PROMPT_TOKENS
    q = torch.randn(rows, TEXT_HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(rows, TEXT_KV_HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    spans = VarlenSpans.square([PROMPT_TOKENS] * prompts)
    flops = 4 * prompts * PROMPT_TOKENS**2 * TEXT_HEADS * HEAD_DIM / 2
    print(f"text prefill attention, {prompts} x {PROMPT_TOKENS} tokens, {TEXT_HEADS} heads over {TEXT_KV_HEADS}:")
    engine_out = TritonOps.varlen_attention(q, k, v, spans, causal=True)
    report("engine (Triton varlen)", lambda: TritonOps.varlen_attention(q, k, v, spans, causal=True), flops, None, repeats)
    group = TEXT_HEADS // TEXT_KV_HEADS
    batch = [t.view(prompts, PROMPT_TOKENS, *t.shape[1:]).transpose(1, 2) for t in (q, k, v)]
    batch[1], batch[2] = (t.repeat_interleave(group, dim=1) for t in batch[1:])
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(*batch, is_causal=True).transpose(1, 2).reshape(rows, TEXT_HEADS, HEAD_DIM)

    report("SDPA cuDNN (keys repeated per head)", cudnn, flops, engine_out, repeats)
    if fa4 is not None:
        cu = cu_seqlens(prompts, PROMPT_TOKENS)
        report("FA4", lambda: fa4(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=PROMPT_TOKENS,
                                  max_seqlen_k=PROMPT_TOKENS, causal=True), flops, engine_out, repeats)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[1, 6])
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 6])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, PyTorch {torch.__version__}", flush=True)
    fa4 = load_fa4()
    with torch.inference_mode():
        for images in args.images:
            image_case(images, fa4, args.repeats)
        for prompts in args.prompts:
            text_case(prompts, fa4, args.repeats)


if __name__ == "__main__":
    main()
