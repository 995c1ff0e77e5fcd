"""One frozen dataclass for everything a user can set: the CLI's flags, the dashboard's controls, a link's params.

Field names are the CLI flag names in snake case and the URL query keys, so a scenario reads the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

LINK_VERSION = 1


@dataclass(frozen=True)
class Scenario:
    model: str = "DeepSeek-R1-Distill-Llama-8B"  # catalog name or path to a config.json
    gpu: str = "H200"  # catalog name, or "custom" with gpu_mem_gib
    gpu_mem_gib: float | None = None  # custom device memory
    gpus: int = 1
    dp: int = 1
    tp: int = 1
    pp: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None  # None: the model's own maximum
    max_num_seqs: int = 1024
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    dtype: str = "bfloat16"
    quantization: str = "none"  # none | fp8 | awq | gptq
    kv_cache_dtype: str = "auto"  # auto | fp8
    num_requests: int = 2000
    workload: str = "reasoning"  # engine.workload spec
    seed: int = 0
    arrival_rate: float | None = None  # requests/s; None: all arrive at t=0 as in the paper
    kv_cache_memory_bytes: int | None = None  # fixed KV pool per replica (CPU runs); None: derived from memory
