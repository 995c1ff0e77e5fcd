"""What one collector job is: one vLLM engine configuration and one batch of requests.

A JobSpec holds every parameter a measured run needs so that the engine can predict the same run; the run bundle's
``run.json`` is built from it. Specs come from sweep TOML files (``collectors.sweep``) or from Python.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.workload import WorkloadError, parse_workload

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "data" / "models"
DTYPES = ("bfloat16", "float16", "float32", "auto")
KV_CACHE_DTYPES = ("auto", "fp8")
LOAD_FORMATS = ("dummy", "auto", "safetensors", "pt")
_RUN_ID_RE = re.compile(r"[^A-Za-z0-9_.-]+")


class SpecError(ValueError):
    """A job parameter that cannot be run; the message names the field and the fix."""


@dataclass(frozen=True)
class EngineParams:
    """The engine configuration: jobs with equal EngineParams can share one started engine."""

    model: str = "tiny-llama-4l"  # catalog name under data/models, a directory with config.json, or a config.json
    load_format: str = "dummy"  # dummy weights: output lengths are fixed by ignore_eos + max_tokens
    dtype: str = "bfloat16"
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    dp: int = 1
    tp: int = 1
    pp: int = 1
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    enable_chunked_prefill: bool = True
    block_size: int = 32  # the CPU attention backend needs a multiple of 32
    max_model_len: int = 2048
    gpu_memory_utilization: float | None = None  # GPU hosts: fraction of device memory for vLLM
    kv_cache_memory_bytes: int | None = None  # exact KV pool per replica (required on CPU)
    enforce_eager: bool = True
    enable_prefix_caching: bool = False  # the paper's prompts are unique; caching would blur recompute cost
    device: str = "auto"  # auto | cpu | cuda


@dataclass(frozen=True)
class JobSpec:
    """One job: an engine configuration plus one batch of requests from a workload profile."""

    name: str
    engine: EngineParams = field(default_factory=EngineParams)
    num_requests: int = 64
    workload: str = "fixed:64,256"
    seed: int = 0
    arrival_rate: float | None = None  # requests/s (Poisson, seeded); None: the whole batch arrives at t=0
    sample_engine: bool = True  # per-step engine telemetry; off only to measure the collector's own overhead
    sample_gpus: bool = True
    notes: str = ""

    def validate(self, check_model: bool = True) -> None:
        """Raise SpecError naming the first bad field; ``check_model`` also insists the model's config is here."""
        e = self.engine
        if not self.name.strip():
            raise SpecError("name is empty: give each job a short name")
        for key in ("dp", "tp", "pp", "max_num_seqs", "max_num_batched_tokens", "block_size", "max_model_len"):
            value = getattr(e, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpecError(f"{key} must be a positive integer, got {value!r}")
        if self.num_requests < 1:
            raise SpecError(f"num_requests must be at least 1, got {self.num_requests}")
        if e.dtype not in DTYPES:
            raise SpecError(f"dtype {e.dtype!r} is not one of {', '.join(DTYPES)}")
        if e.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise SpecError(f"kv_cache_dtype {e.kv_cache_dtype!r} is not one of {', '.join(KV_CACHE_DTYPES)}")
        if e.load_format not in LOAD_FORMATS:
            raise SpecError(f"load_format {e.load_format!r} is not one of {', '.join(LOAD_FORMATS)}")
        if e.device not in ("auto", "cpu", "cuda"):
            raise SpecError(f"device {e.device!r} must be auto, cpu or cuda")
        if e.gpu_memory_utilization is not None and not 0 < e.gpu_memory_utilization <= 1:
            raise SpecError(f"gpu_memory_utilization must be in (0, 1], got {e.gpu_memory_utilization}")
        if e.kv_cache_memory_bytes is not None and e.kv_cache_memory_bytes < 1:
            raise SpecError(f"kv_cache_memory_bytes must be positive, got {e.kv_cache_memory_bytes}")
        if self.arrival_rate is not None and not self.arrival_rate > 0:
            raise SpecError(
                f"arrival_rate must be > 0 requests/s (leave it out for a batch at t=0), got {self.arrival_rate}"
            )
        try:
            parse_workload(self.workload)
        except WorkloadError as exc:
            raise SpecError(f"workload: {exc}") from None
        if check_model:
            resolve_model_dir(e.model)

    @property
    def run_id(self) -> str:
        """Deterministic from every parameter, so a re-run of a sweep finds the points it already completed."""
        return f"{_slug(self.name)}-{self.digest()[:10]}"

    def digest(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("notes")
        return data


def job_from_mapping(data: dict[str, Any], where: str, check_model: bool = True) -> JobSpec:
    """Build a JobSpec from a flat mapping (a sweep point); unknown keys are an error naming ``where``."""
    engine_keys = {f.name for f in fields(EngineParams)}
    job_keys = {f.name for f in fields(JobSpec)} - {"engine"}
    unknown = sorted(set(data) - engine_keys - job_keys)
    if unknown:
        raise SpecError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(engine_keys | job_keys))}"
        )
    engine_args = {k: v for k, v in data.items() if k in engine_keys}
    job_args = {k: v for k, v in data.items() if k in job_keys}
    if "name" not in job_args:
        raise SpecError(f"{where}: every job needs a name")
    try:
        spec = JobSpec(engine=EngineParams(**engine_args), **job_args)
    except TypeError as exc:
        raise SpecError(f"{where}: {exc}") from None
    try:
        spec.validate(check_model)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    return spec


def resolve_model_dir(model: str) -> Path:
    """The directory vLLM loads: a catalog name under data/models, a directory, or a config.json's directory."""
    candidates = [Path(model), MODELS_DIR / model]
    for path in candidates:
        if path.is_file() and path.name == "config.json":
            return path.parent.resolve()
        if path.is_dir() and (path / "config.json").is_file():
            return path.resolve()
    known = sorted(p.name for p in MODELS_DIR.iterdir() if (p / "config.json").is_file()) if MODELS_DIR.is_dir() else []
    raise SpecError(
        f"model {model!r} not found: give a directory holding config.json, a config.json path, "
        f"or one of data/models: {', '.join(known) or '(none)'}"
    )


def _slug(text: str) -> str:
    return _RUN_ID_RE.sub("-", text.strip()).strip("-")[:80] or "job"
