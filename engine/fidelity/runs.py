"""A measured run as something the engine can predict: its Scenario, its device and its own request list.

A run records every engine parameter (run.json), so the prediction uses exactly what the run used: the model's
config.json as the run carried it, the same KV pool, scheduler limits and layout, and the run's own (isl, osl)
list in arrival order. The device is the host's *measured* roofline for CPU runs (``device_profile``, written by
the collector before the sweep) and the catalog's datasheet entry for GPU runs. Both are materialised as files in
a content-addressed cache directory because a Scenario names its model and device by path (it must stay hashable).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.bundle import canonical_config_sha256
from engine.catalog import MODELS_DIR, CatalogError, GpuSpec, list_models, load_gpu
from engine.scenario import Scenario

CACHE_ENV = "CLIFFSCOPE_CACHE"
# Priors for a measured CPU profile, before any calibration: the profile is what a streaming sum and a 1024² matmul
# reach, real kernels reach less of it. Calibration replaces these; the report says which one was used.
HOST_PRIOR = {
    "mem_efficiency": 0.8,
    "compute_efficiency": 0.5,
    "link_efficiency": 0.5,
    "link_latency_s": 20e-6,
    "step_overhead_s": 0.003,
}


class RunError(ValueError):
    """A measured run that cannot be predicted; the message names the run, the field and the fix."""


@dataclass(frozen=True)
class RunCase:
    """Everything needed to predict one measured run and compare the prediction with it."""

    run_id: str
    name: str
    meta: dict[str, Any] = field(repr=False)
    scenario: Scenario
    device: GpuSpec = field(repr=False)
    device_key: str  # calibration group: the same hardware at the same thread count / the same GPU model
    vllm_version: str
    lengths: np.ndarray = field(repr=False)  # (n, 2) isl, osl in arrival order
    arrivals_at_start: bool  # True for a batch (no arrival rate): the step trace's fast path holds
    arrivals_s: np.ndarray = field(repr=False)  # when the scheduler first saw each request (same order as lengths)
    arrival_steps: np.ndarray = field(repr=False)  # engine steps the run had completed when each request arrived
    prefix_caching: bool  # whether the engine reused cached blocks of re-admitted requests
    measured: dict[str, Any] = field(repr=False)  # store.measured_summary
    samples: pl.DataFrame = field(repr=False)  # engine samples, every row (small runs)
    requests: pl.DataFrame = field(repr=False)  # measured requests with derived metrics

    @property
    def group(self) -> tuple[str, str]:
        return (self.device_key, self.vllm_version)

    @property
    def layout(self) -> str:
        s = self.scenario
        return f"DP{s.dp}·TP{s.tp}·PP{s.pp}"


def cache_dir() -> Path:
    """Where materialised model configs and host profiles go: ``$CLIFFSCOPE_CACHE`` or a per-user temp folder."""
    env = os.environ.get(CACHE_ENV)
    root = Path(env) if env else Path(tempfile.gettempdir()) / f"cliffscope-cache-{os.getuid()}"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _write_once(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically unless the same content is already there."""
    if path.is_file() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def model_ref(meta: dict[str, Any]) -> str:
    """The catalog name when the run's config equals the catalog's, else a path to the run's own config.json."""
    config = meta.get("model_config")
    name = str(meta.get("model_name") or "model")
    if not isinstance(config, dict) or not config:
        if name in list_models():
            return name
        raise RunError(f"run {meta.get('run_id')}: model_config is empty and {name!r} is not in the catalog")
    sha = canonical_config_sha256(config)
    if name in list_models():
        catalog_config = json.loads((MODELS_DIR / name / "config.json").read_text())
        if canonical_config_sha256(catalog_config) == sha:
            return name
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    path = cache_dir() / "models" / sha[:16] / safe / "config.json"
    return str(_write_once(path, json.dumps(config, indent=1, sort_keys=True) + "\n"))


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def host_device_table(meta: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A CPU run's measured profile as a device-catalog table (name, keys of GpuSpec); None without a profile."""
    profile = meta.get("device_profile")
    if not isinstance(profile, dict):
        return None
    dtype = str(profile.get("dtype") or meta.get("dtype") or "bfloat16")
    bandwidth = profile.get("hbm_bytes_per_s")
    flops = profile.get("bf16_flops") or profile.get(f"{dtype}_flops")
    if not (_positive(bandwidth) and _positive(flops)):
        raise RunError(
            f"run {meta.get('run_id')}: device_profile lacks a positive hbm_bytes_per_s and bf16_flops (or "
            f"{dtype}_flops); re-measure the host (collectors.host_profile) or drop the profile to use cpu-host"
        )
    copy = profile.get("copy_bytes_per_s")
    key = device_key(meta)
    digest = hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()[:10]
    name = f"{key}-{digest}-r{ranks_on_host(meta)}"
    memory = int(profile.get("memory_bytes") or 0) or 24 * 1024**3
    table = {
        "kind": "cpu",
        "vendor": str(profile.get("cpu_model") or "cpu"),
        "memory_bytes": memory,
        "hbm_bytes_per_s": float(bandwidth),
        "bf16_flops": float(flops),
        "fp8_flops": 0.0,
        "link_bytes_per_s": float(copy) / 2 if _positive(copy) else float(bandwidth) / 2,
        "gpus_per_node": 64,
        "non_torch_bytes": 0,
        "ranks_sharing": ranks_on_host(meta),
        **HOST_PRIOR,
        "source": f"measured host profile of run {meta.get('run_id')}: {profile.get('source', 'no method given')}"
        f" (at {profile.get('measured_at', 'unknown time')})",
    }
    return name, table


def ranks_on_host(meta: dict[str, Any]) -> int:
    """Engine ranks of a CPU run on its one host: DP replicas × TP × PP workers (each a process wanting cores)."""
    return max(int(meta.get("dp") or 1) * int(meta.get("tp") or 1) * int(meta.get("pp") or 1), 1)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def device_ref(meta: dict[str, Any]) -> str:
    """The device a run is predicted on: its measured host profile (CPU) or the catalog entry of its GPU."""
    device = str(meta.get("device") or "")
    if device.lower() == "cpu" or (
        isinstance(meta.get("device_profile"), dict) and meta["device_profile"].get("kind") == "cpu"
    ):
        host = host_device_table(meta)
        if host is None:
            return "cpu-host"  # rough datasheet-like default; the report says so through the device's source
        name, table = host
        body = f"[{json.dumps(name)}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items())
        return str(_write_once(cache_dir() / "hosts" / f"{name}.toml", body))
    try:
        return load_gpu(device).name
    except CatalogError as exc:
        raise RunError(f"run {meta.get('run_id')}: device {device!r} is not in the device catalog ({exc})") from None


def device_key(meta: dict[str, Any]) -> str:
    """Which runs share one calibration: the same CPU model, thread count and ranks per host, or the same GPU."""
    profile = meta.get("device_profile") if isinstance(meta.get("device_profile"), dict) else None
    device = str(meta.get("device") or "")
    if device.lower() == "cpu" or (profile and profile.get("kind") == "cpu"):
        if not profile:
            return "cpu-unprofiled"
        cpu = str(profile.get("cpu_model") or "cpu")
        slug = "".join(ch if ch.isalnum() else "-" for ch in cpu.lower()).strip("-")
        while "--" in slug:
            slug = slug.replace("--", "-")
        # One calibration per host across layouts (issue #11): ranks on one CPU host share its cores and memory
        # bus, which the step model prices as host contention (engine.perf; the device's ranks_sharing), fitted
        # with the other parameters, so held-out layouts can be scored against a fit that never saw them.
        # The matmul ISA too (collectors' host profile, ``isa``): one CPU model name covers hosts with and without
        # native bf16 (the bundled cpu-iv-a host did 202 GFLOP/s of bf16 matmul per thread, an AVX2-only one of the
        # same name under 10), so a fit must not mix them. Runs recorded before the field keep their old key.
        isa = str(profile.get("isa") or "")
        return f"cpu-{slug[:40]}-{isa + '-' if isa else ''}{int(profile.get('threads') or 0)}t"
    try:
        return load_gpu(device).name
    except CatalogError:
        return device or "unknown"


def prefix_caching_of(meta: dict[str, Any]) -> bool:
    """Whether the run's engine had prefix caching on (run.json, or the collector's block); vLLM v1 default: on."""
    for holder in (meta, meta.get("collector") if isinstance(meta.get("collector"), dict) else {}):
        value = holder.get("enable_prefix_caching")
        if isinstance(value, bool):
            return value
    return True


def scenario_for_run(meta: dict[str, Any], lengths: np.ndarray) -> Scenario:
    """The Scenario of a measured run, from its run.json; the request list itself is passed to predict."""

    def need(key: str) -> Any:
        value = meta.get(key)
        if value is None:
            raise RunError(f"run {meta.get('run_id')}: run.json lacks {key!r}, which the prediction needs")
        return value

    dp, tp, pp = int(need("dp")), int(need("tp")), int(need("pp"))
    rate = meta.get("arrival_rate")
    return Scenario(
        model=model_ref(meta),
        gpu=device_ref(meta),
        gpus=dp * tp * pp,
        dp=dp,
        tp=tp,
        pp=pp,
        gpu_memory_utilization=float(meta.get("gpu_memory_utilization") or 0.9),
        max_model_len=int(need("max_model_len")),
        max_num_seqs=int(need("max_num_seqs")),
        max_num_batched_tokens=int(need("max_num_batched_tokens")),
        block_size=int(need("block_size")),
        dtype=str(meta.get("dtype") or "bfloat16"),
        quantization=str(meta.get("quantization") or "none"),
        kv_cache_dtype=str(meta.get("kv_cache_dtype") or "auto"),
        num_requests=len(lengths),
        workload=str(meta.get("workload") or "fixed:1,1"),
        seed=int(meta.get("seed") or 0),
        arrival_rate=float(rate) if rate else None,
        kv_cache_memory_bytes=int(meta["kv_cache_memory_bytes"]) if meta.get("kv_cache_memory_bytes") else None,
    )


def queue_cliff_onset(samples: pl.DataFrame, last_arrival_s: float) -> float | None:
    """When the first preemption really happened: the first sample after the batch was submitted at which the
    waiting queue grows while the running set shrinks (a request went back from running to waiting).

    vLLM v1 counts a preemption in ``num_preempted_reqs`` only when the preempted request produces its next token
    (the event rides on that request's output), i.e. when it is resumed: on a full pool that can be seconds later,
    so the counter-based onset is late. The queue is not.
    """
    if samples.height < 2 or "waiting" not in samples.columns:
        return None
    s = samples.sort("t_s")
    t = s["t_s"].to_numpy()
    waiting = s["waiting"].fill_null(0).to_numpy()
    running = s["running"].fill_null(0).to_numpy()
    moved_back = (np.diff(waiting) > 0) & (np.diff(running) < 0) & (t[1:] > last_arrival_s + 1e-9)
    grows = np.flatnonzero(moved_back) + 1
    return float(t[grows[0]]) if len(grows) else None


def arrival_steps(samples: pl.DataFrame, arrivals_s: np.ndarray, finished_s: np.ndarray) -> np.ndarray:
    return scheduler_arrivals(samples, arrivals_s, finished_s)[0]


def scheduler_arrivals(
    samples: pl.DataFrame, arrivals_s: np.ndarray, finished_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each request (in arrival order): how many engine steps had completed when the scheduler first saw it,
    and when (seconds).

    A batch is submitted by a loop while the engine already runs, and requests reach the engine-core process a
    little later than the client stamps them; which step first sees a request decides how many fit in the pool at
    once. Samples are taken once per step, so the scheduler's count of known requests at step i is running +
    waiting + finished by then; request j arrived before the first step whose count exceeds j. In step units this
    does not depend on step durations, so the step trace replays it exactly. Without samples: the client stamps.
    """
    if samples.height == 0:
        return np.zeros(len(arrivals_s)), arrivals_s
    s = samples.sort("t_s")
    t = s["t_s"].to_numpy().astype(float)
    done = np.sort(finished_s[np.isfinite(finished_s)])
    known = (
        s["running"].fill_null(0).to_numpy()
        + s["waiting"].fill_null(0).to_numpy()
        + np.searchsorted(done, t, side="left")
    )
    known = np.maximum.accumulate(known)
    # Count only steps that did work: an engine polled before the batch reached it steps over nothing, and the
    # simulator (which idles until an arrival) has no such steps.
    worked = np.cumsum(s["running"].fill_null(0).to_numpy() > 0)
    first = np.searchsorted(known, np.arange(len(arrivals_s)), side="right")  # sample index that first saw it
    before = np.where(first > 0, worked[np.clip(first - 1, 0, len(t) - 1)], 0)
    steps = (before - before.min()).astype(float) if len(before) else before.astype(float)
    # When the scheduler first saw it: the end of the step before (the client's stamp if that was later).
    seen_s = np.where(first > 0, t[np.clip(first - 1, 0, len(t) - 1)], 0.0)
    seen_s = np.where(before > before.min(initial=0), np.maximum(seen_s, arrivals_s), arrivals_s)
    return steps, seen_s


def load_case(store: Any, run_id: str) -> RunCase:
    """Read one run from the store and make it predictable; RunError says why a run cannot be used."""
    meta = store.run_meta(run_id)
    if meta is None:
        raise RunError(f"run {run_id!r} is not in the database; list runs with `python -m engine runs`")
    if meta.get("status") == "failed":
        reason = meta.get("error") or "no reason given"
        raise RunError(f"run {run_id}: status is 'failed' ({reason}); nothing to compare")
    lengths = store.request_lengths(run_id)
    if len(lengths) == 0:
        raise RunError(f"run {run_id}: no request rows; validation compares request by request")
    requests = store.requests(run_id)
    if requests["finished_s"].null_count() == requests.height:
        raise RunError(f"run {run_id}: no request finished; a partial run with nothing finished cannot be compared")
    measured = dict(store.measured_summary(run_id) or {})
    arrivals_s = np.maximum(requests["arrival_s"].fill_null(0.0).to_numpy().astype(float), 0.0)
    arrivals = arrivals_s
    at_start = not meta.get("arrival_rate")  # a batch: submitted at once (its arrival_s span the submission loop)
    samples = store.engine_samples(run_id)
    if at_start:
        counter_onset = measured.get("cliff_onset_s")
        queue_onset = queue_cliff_onset(samples, float(np.max(arrivals)) if len(arrivals) else 0.0)
        measured["cliff_onset_counter_s"] = counter_onset
        if queue_onset is not None and (counter_onset is None or queue_onset < counter_onset):
            measured["cliff_onset_s"] = queue_onset
    scenario = scenario_for_run(meta, lengths)
    # One sample per engine step (several DP engines' samples merged do not count one engine's steps).
    per_step = meta.get("sample_interval_s") is None and int(meta.get("dp") or 1) == 1 and samples.height > 0
    seen = scheduler_arrivals(samples, arrivals_s, requests["finished_s"].fill_null(np.nan).to_numpy())
    from engine.catalog import resolve_device

    return RunCase(
        run_id=run_id,
        name=str(meta.get("name") or run_id),
        meta=meta,
        scenario=scenario,
        device=resolve_device(scenario.gpu),
        device_key=device_key(meta),
        vllm_version=str(meta.get("vllm_version") or "unknown"),
        lengths=lengths,
        arrivals_at_start=bool(at_start),
        arrivals_s=seen[1] if per_step else arrivals_s,
        arrival_steps=(seen[0] if per_step else np.zeros(len(arrivals_s))),
        prefix_caching=prefix_caching_of(meta),
        measured=measured,
        samples=samples,
        requests=requests,
    )


def load_cases(store: Any, run_ids: list[str] | None = None) -> tuple[list[RunCase], list[dict[str, str]]]:
    """Every named run (default: all runs in the store) that can be predicted, plus why the others were skipped."""
    if run_ids is None:  # published runs state summary figures only: they are scored apart, not replayed here
        runs = store.runs()
        run_ids = [str(r) for r, s in zip(runs["run_id"], runs["source"], strict=True) if s != "published"]
    cases, skipped = [], []
    for run_id in sorted(run_ids):
        try:
            cases.append(load_case(store, run_id))
        except (RunError, CatalogError, ValueError) as exc:
            skipped.append({"run_id": run_id, "reason": str(exc)})
    return cases, skipped
