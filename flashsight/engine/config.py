"""The engine's one typed configuration object."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL = "zai-org/GLM-4.6V-Flash"


@dataclass(frozen=True)
class EngineConfig:
    model: str = DEFAULT_MODEL  # a local checkpoint directory or a hub id
    revision: str | None = None  # hub revision, when `model` is a hub id
    served_model_name: str | None = None  # the id clients use; default: the model's name
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32
    max_model_len: int | None = None  # default: the checkpoint's max positions
    max_queue: int = 256  # requests waiting beyond this get EngineOverloadedError
    block_size: int = 16  # tokens per KV-cache block
    kv_cache_gb: float | None = None  # KV cache size; default: from gpu_memory_utilization (GPU), 2 GB (CPU)
    gpu_memory_utilization: float = 0.9  # share of the GPU's memory flashsight may fill
    max_num_seqs: int = 256  # sequences in one batch
    max_num_batched_tokens: int = 8192  # tokens computed per step; longer prompts are chunked
    enable_prefix_caching: bool = True
    image_cache_mb: int = 512  # vision-tower outputs kept for re-sent images; 0 turns it off
    kernels: str = "auto"  # auto (Triton on a GPU) | triton | torch (the reference ops everywhere) | fa4
    cuda_graphs: bool = True  # replay decode steps as CUDA graphs on a GPU

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"dtype must be auto, bf16, fp16 or fp32, not {self.dtype!r}")
        if self.kernels not in ("auto", "triton", "torch", "fa4"):
            raise ValueError(f"kernels must be auto, triton, torch or fa4, not {self.kernels!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.block_size < 1 or self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError("block_size, max_num_seqs and max_num_batched_tokens must be positive")
