"""FlashAttention-4's varlen forward (pip's `flash-attn-4`, CuTe-DSL kernels for Hopper and
Blackwell) for the prompt attentions: the images' patches and the text chunks. Optional: the
engine takes it only with `kernels="fa4"`, and only where a step's sequences sit back to back in
its rows; anything else goes to the Triton and cuDNN kernels as before."""

from __future__ import annotations

import functools

import torch

from flashsight.engine.kernels.varlen_spans import VarlenSpans


@functools.cache
def forward():
    """FA4's varlen forward, or an ImportError saying why there is none. Its private entry point
    is the one that writes into a given output (the public one always allocates)."""
    try:
        from flash_attn.cute import interface
    except Exception as exc:  # not installed, or the CuTe DSL's libraries do not load
        raise ImportError(f"kernels='fa4' needs the flash-attn-4 package ({type(exc).__name__}: {exc})") from exc
    return interface._flash_attn_fwd


def varlen_attention(q, k, v, spans: VarlenSpans, causal: bool, out: torch.Tensor) -> bool:
    """Attend each sequence's query rows over its key rows into `out`'s rows (causal: aligned at
    the keys' end, as for a chunk after a cached prefix). Returns False, touching nothing, when
    the query or key rows are not back to back: the caller's kernel takes those."""
    rows = spans.packed_on(q.device)
    if rows is None:
        return False
    forward()(
        q[rows.q_rows], k[rows.k_rows], v[rows.k_rows], out=out[rows.q_rows], causal=causal,
        cu_seqlens_q=rows.cu_q, cu_seqlens_k=rows.cu_k, max_seqlen_q=rows.max_q, max_seqlen_k=rows.max_k,
    )  # fmt: skip
    return True
