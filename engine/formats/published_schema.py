"""The vocabulary of "cliffscope-published/1": which sections, flags and figures a published record may name.

Flag names are vLLM's own (``vllm serve --tensor-parallel-size`` is ``tensor_parallel_size``; ``vllm bench serve`` /
``benchmarks/benchmark_serving.py --random-input-len`` is ``random_input_len``). The lists hold the engine and client
arguments that shape what a run measures, across vLLM 0.4–0.11 (older names such as ``num_scheduler_steps`` and
``use_v2_block_manager`` stay valid because published runs used them); a name outside them is refused so that a typo
(``tensor_paralel_size``) never passes as "a flag the source stated". Adding a real vLLM argument here is the fix
when a source states one that is missing.
"""

from __future__ import annotations

from enum import StrEnum


class RecordKind(StrEnum):
    """What a published record reports: a start-up log's memory figures, a bench client's summary, a paper's table."""

    STARTUP = "startup"
    BENCH = "bench"
    PAPER = "paper"


FORMAT = "cliffscope-published/1"

# name -> accepted Python types of the TOML value (bool is never accepted as int).
_INT = (int,)
_NUM = (int, float)
_STR = (str,)
_BOOL = (bool,)
_ANY = (int, float, str, bool, dict, list)

SERVER_FLAGS: dict[str, tuple[type, ...]] = {
    "tensor_parallel_size": _INT,
    "pipeline_parallel_size": _INT,
    "data_parallel_size": _INT,
    "enable_expert_parallel": _BOOL,
    "decode_context_parallel_size": _INT,
    "gpu_memory_utilization": _NUM,
    "kv_cache_memory_bytes": _INT,
    "max_model_len": _INT,
    "max_num_seqs": _INT,
    "max_num_batched_tokens": _INT,
    "max_seq_len_to_capture": _INT,
    "max_num_partial_prefills": _INT,
    "long_prefill_token_threshold": _INT,
    "block_size": _INT,
    "num_gpu_blocks_override": _INT,
    "swap_space": _NUM,
    "cpu_offload_gb": _NUM,
    "dtype": _STR,
    "quantization": _STR,
    "kv_cache_dtype": _STR,
    "load_format": _STR,
    "enable_chunked_prefill": _BOOL,
    "enable_prefix_caching": _BOOL,
    "enforce_eager": _BOOL,
    "disable_custom_all_reduce": _BOOL,
    "disable_log_requests": _BOOL,
    "disable_log_stats": _BOOL,
    "trust_remote_code": _BOOL,
    "async_scheduling": _BOOL,
    "enable_dbo": _BOOL,
    "enable_eplb": _BOOL,
    "num_scheduler_steps": _INT,
    "use_v2_block_manager": _BOOL,
    "preemption_mode": _STR,
    "scheduling_policy": _STR,
    "distributed_executor_backend": _STR,
    "attention_backend": _STR,
    "compilation_config": _ANY,
    "cuda_graph_sizes": _ANY,
    "speculative_config": _ANY,
    "speculative_model": _STR,
    "num_speculative_tokens": _INT,
    "seed": _INT,
    "served_model_name": _STR,
    "tokenizer_mode": _STR,
}

CLIENT_FLAGS: dict[str, tuple[type, ...]] = {
    "backend": _STR,
    "endpoint": _STR,
    "dataset_name": _STR,
    "dataset_path": _STR,
    "num_prompts": _INT,
    "request_rate": (int, float, str),  # a number, or "inf"
    "max_concurrency": _INT,
    "burstiness": _NUM,
    "random_input_len": _INT,
    "random_output_len": _INT,
    "random_range_ratio": _NUM,
    "random_prefix_len": _INT,
    "sharegpt_output_len": _INT,
    "sonnet_input_len": _INT,
    "sonnet_output_len": _INT,
    "sonnet_prefix_len": _INT,
    "hf_output_len": _INT,
    "input_len": _INT,
    "output_len": _INT,
    "ignore_eos": _BOOL,
    "seed": _INT,
    "temperature": _NUM,
    "top_p": _NUM,
    "top_k": _INT,
    "use_beam_search": _BOOL,
    "percentile_metrics": _STR,
    "metric_percentiles": _STR,
    "goodput": _ANY,
    "num_warmups": _INT,
    "ramp_up_strategy": _STR,
}

DATASET_NAMES = (
    "random",
    "sharegpt",
    "sonnet",
    "hf",
    "burstgpt",
    "custom",
    "prefix_repetition",
    "random-mm",
    "spec_bench",
)

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "bfloat16", "float16")

# Paper records describe their own workload (papers rarely use vLLM's bench client).
WORKLOAD_KEYS: dict[str, tuple[type, ...]] = {"dataset": _STR, "num_requests": _INT, "description": _STR}

# figure name -> (unit, whole number?)
STARTUP_FIGURES: dict[str, tuple[str, bool]] = {
    "kv_cache_tokens": ("tokens", True),
    "available_kv_cache_gib": ("GiB", False),
    "num_gpu_blocks": ("blocks", True),
    "max_concurrency": ("requests at max_concurrency_tokens_per_request", False),
    "max_concurrency_tokens_per_request": ("tokens", True),
    "model_weights_gib": ("GiB", False),
    "activation_peak_gib": ("GiB", False),
    "non_torch_gib": ("GiB", False),
    "cuda_graph_gib": ("GiB", False),
    "total_gpu_memory_gib": ("GiB", False),
}

_LATENCY_FIGURES = {
    f"{stat}_{metric}_ms": ("ms", False)
    for metric in ("ttft", "tpot", "itl", "e2el")
    for stat in ("mean", "median", "p90", "p95", "p99")
}
BENCH_FIGURES: dict[str, tuple[str, bool]] = {
    "duration_s": ("s", False),
    "completed": ("requests", True),
    "failed": ("requests", True),
    "total_input_tokens": ("tokens", True),
    "total_output_tokens": ("tokens", True),
    "request_throughput": ("requests/s", False),
    "output_throughput": ("tokens/s", False),
    "total_token_throughput": ("tokens/s", False),
    "peak_output_throughput": ("tokens/s", False),
    "peak_concurrent_requests": ("requests", False),
    **_LATENCY_FIGURES,
}
PAPER_FIGURES: dict[str, tuple[str, bool]] = {"completion_s": ("s", False), **BENCH_FIGURES}

FIGURES: dict[RecordKind, dict[str, tuple[str, bool]]] = {
    RecordKind.STARTUP: STARTUP_FIGURES,
    RecordKind.BENCH: BENCH_FIGURES,
    RecordKind.PAPER: PAPER_FIGURES,
}

# Sections each kind may carry beyond the common ones.
KIND_SECTIONS: dict[RecordKind, frozenset[str]] = {
    RecordKind.STARTUP: frozenset(),
    RecordKind.BENCH: frozenset({"client"}),
    RecordKind.PAPER: frozenset({"workload"}),
}
TOP_KEYS = frozenset({"format", "id", "kind", "title", "notes", "explained_miss"})
COMMON_SECTIONS = frozenset({"source", "hardware", "software", "model", "server", "figures", "env"})
SOURCE_KEYS = frozenset({"url", "citation", "publisher", "date", "quote", "checked", "approximate"})
