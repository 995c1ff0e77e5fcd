"""The step trace re-times a run exactly as the simulator would have timed it with the same calibration."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.fidelity.runs import CACHE_ENV, device_ref, model_ref
from engine.fidelity.steps import FAST_METRICS, trace_run
from engine.perf import Calibration
from engine.scenario import Scenario
from engine.simulate import predict
from engine.workload import request_lengths
from tests.support.synthetic_runs import SyntheticRun, meta_for, scenario_of

CALIBRATIONS = (
    Calibration(),
    Calibration(mem_efficiency=0.3, compute_efficiency=0.1, step_overhead_s=0.02, per_seq_overhead_s=3e-4),
    Calibration(mem_efficiency=2.0, compute_efficiency=1.5, step_overhead_s=1e-5, layer_overhead_s=1e-3),
)


def _cpu_scenario(**overrides: object) -> Scenario:
    meta = meta_for(SyntheticRun("steps", 32, 128, 48, 16))
    return replace(scenario_of(meta), **overrides)


@pytest.mark.parametrize(
    ("overrides", "workload"),
    [
        ({}, "fixed:32,128"),
        ({"kv_cache_memory_bytes": 2 * 1024**2}, "lognormal:40,0.6,150,0.6"),  # preemption and recompute
        ({"dp": 2, "gpus": 2}, "lognormal:200,0.8,60,0.5"),  # two replicas, chunked prefill
        ({"max_num_batched_tokens": 64}, "fixed:300,20"),  # prefill split into chunks
    ],
)
def test_trace_matches_predict(overrides: dict[str, object], workload: str) -> None:
    scenario = _cpu_scenario(**overrides)
    lengths = request_lengths(workload, 48, 3)
    lengths[:, 0] = np.minimum(lengths[:, 0], 600)
    lengths[:, 1] = np.minimum(lengths[:, 1], 400)
    for prefix_caching in (True, False):
        _same_figures(scenario, lengths, prefix_caching)


def _same_figures(scenario: Scenario, lengths: np.ndarray, prefix_caching: bool) -> None:
    trace = trace_run(scenario, lengths, prefix_caching)
    for cal in CALIBRATIONS:
        fast = trace.evaluate(cal)
        full = predict(scenario, lengths, cal, prefix_caching=prefix_caching).summary
        for metric in FAST_METRICS:
            if full[metric] is None:
                assert fast[metric] is None, metric
            else:
                assert math.isclose(fast[metric], full[metric], rel_tol=1e-9), (metric, fast[metric], full[metric])


def test_trace_on_a_gpu_with_pipeline_stages() -> None:
    scenario = Scenario(
        model="DeepSeek-R1-Distill-Llama-8B", gpu="H100", gpus=2, pp=2, max_model_len=8192, max_num_seqs=64
    )
    lengths = request_lengths("fixed:512,256", 100, 0)
    trace = trace_run(scenario, lengths)
    cal = Calibration(mem_efficiency=0.6, step_overhead_s=0.002, pp_handoff_latency_s=1e-4)
    full = predict(scenario, lengths, cal).summary
    fast = trace.evaluate(cal)
    assert math.isclose(fast["completion_s"], full["completion_s"], rel_tol=1e-9)
    assert math.isclose(fast["e2e_mean_s"], full["e2e_mean_s"], rel_tol=1e-9)


def test_trace_refuses_runs_with_arrivals() -> None:
    with pytest.raises(ValueError, match="arrival rate"):
        trace_run(_cpu_scenario(arrival_rate=5.0), request_lengths("fixed:32,32", 4, 0))


def test_run_config_and_profile_materialise_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's own config.json and host profile are written on first use, then found again, never rewritten."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    meta = meta_for(SyntheticRun("cache", 32, 32, 4, 4))
    written = []
    for ref in (model_ref, device_ref):
        first = Path(ref(meta))
        assert first.is_file() and first.is_relative_to(tmp_path)
        stamp = (first.stat().st_ino, first.stat().st_mtime_ns)
        assert Path(ref(meta)) == first
        assert (first.stat().st_ino, first.stat().st_mtime_ns) == stamp  # os.replace would give a new inode
        written.append(first)
    assert json.loads(written[0].read_text()) == meta["model_config"]
    path = str(written[1])
    assert path.endswith(".toml")
    from engine.catalog import resolve_device

    device = resolve_device(path)
    assert device.kind == "cpu" and device.hbm_bytes_per_s == 10e9 and device.bf16_flops == 200e9
    assert "measured host profile" in device.source


def test_trace_logs_only_the_steps_the_driver_prices() -> None:
    """With requests arriving over the run's steps, the trace holds exactly the scheduler's steps: one logged column
    per step the replica ran (the last request finishes at the last step of a run that never idles), none for the
    driver's look-ahead to the next arrival."""
    scenario = _cpu_scenario()
    lengths = request_lengths("fixed:40,120", 48, 0)
    arrival_steps = np.arange(48, dtype=float) * 3  # a request every 3 steps: the batch keeps running meanwhile
    trace = trace_run(scenario, lengths, arrival_steps=arrival_steps)
    (rep,) = trace.replicas
    assert rep.steps.shape[1] == int(np.nanmax(rep.finished))
    assert (rep.steps[0] >= 1).all()  # every logged step computed at least one token
