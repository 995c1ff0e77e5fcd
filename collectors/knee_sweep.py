"""Knee-bounded sweeps (``run SWEEP --around-knee`` or ``around_knee = true`` under ``[sweep]``): measure densely
around the engine's predicted knee and sparsely elsewhere, and stop once measured runs preempt past it.

Only a sweep whose single axis is ``max_num_seqs`` can be bounded this way (the knee is a max_num_seqs); anything
else is an error that says so. The plan, from the plain grid G (ascending) and the predicted knee k (engine.knee,
"no preemption": the last setting at which the engine expects no preemption):

- dense: every grid value within a factor ``BAND`` of k (k / BAND ≤ v ≤ k · BAND);
- sparse: the lowest grid value (the calm reference) and, above the band, one value per quadrupling;
- stop: once ``PATIENCE`` consecutive measured points above k have preempted, the higher points are not run —
  measured sustained preemption past the knee says nothing new about where the knee is.

Why BAND = 1.5 and PATIENCE = 2: the half-octave ladder the engine searches steps by 1.5×, so the band holds the knee's
neighbours on that ladder; a single preempting run can be a late, marginal eviction (the bundled max_num_seqs 8 run
preempted 10 times, all in its last seconds), two in a row past the knee cannot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from collectors.progress import SweepProgress
from collectors.runner import SweepReport, run_sweep
from collectors.spec import JobSpec, SpecError, resolve_model_dir
from collectors.sweep import Sweep

BAND = 1.5
PATIENCE = 2


@dataclass(frozen=True)
class KneePlan:
    grid: tuple[int, ...]  # the plain grid's max_num_seqs values, ascending
    predicted_knee: int | None
    planned: tuple[int, ...]  # the values the bounded sweep would run, ascending
    device: str  # what the prediction priced steps with
    predictions: int

    def describe(self) -> str:
        return (
            f"predicted knee (no preemption): max_num_seqs {self.predicted_knee} on {self.device} "
            f"({self.predictions} predictions); plain grid {len(self.grid)} points {list(self.grid)}, "
            f"planned {len(self.planned)} {list(self.planned)}"
        )


@dataclass
class KneeSweepReport:
    plan: KneePlan
    report: SweepReport = field(default_factory=SweepReport)
    measured: dict[int, int] = field(default_factory=dict)  # max_num_seqs -> measured preemptions
    stopped_at: int | None = None  # the value after which the axis stopped

    def measured_knee(self) -> int | None:
        """The last measured setting without preemption."""
        calm = [v for v, p in sorted(self.measured.items()) if p == 0]
        return calm[-1] if calm else None


def _axis_values(sweep: Sweep) -> list[int]:
    if list(sweep.axes) != ["max_num_seqs"]:
        raise SpecError(
            f"sweep {sweep.name}: --around-knee needs max_num_seqs as the only axis, found {list(sweep.axes) or 'none'}"
        )
    return sorted({int(v) for v in sweep.axes["max_num_seqs"]})


def job_meta(job: JobSpec, profile: dict[str, Any] | None) -> dict[str, Any]:
    """A job as the run.json fields engine.fidelity.runs reads (so it is predicted exactly as its run would be)."""
    e = job.engine
    config = json.loads((resolve_model_dir(e.model) / "config.json").read_text(encoding="utf-8"))
    meta: dict[str, Any] = {
        "run_id": job.run_id, "model_name": Path(e.model).name, "model_config": config,
        "device": "cpu" if e.device in ("auto", "cpu") else e.device, "dp": e.dp, "tp": e.tp, "pp": e.pp,
        "max_model_len": e.max_model_len, "max_num_seqs": e.max_num_seqs,
        "max_num_batched_tokens": e.max_num_batched_tokens, "block_size": e.block_size, "dtype": e.dtype,
        "quantization": e.quantization, "kv_cache_dtype": e.kv_cache_dtype,
        "kv_cache_memory_bytes": e.kv_cache_memory_bytes, "workload": job.workload, "seed": job.seed,
        "arrival_rate": job.arrival_rate, "enable_prefix_caching": e.enable_prefix_caching,
        "gpu_memory_utilization": e.gpu_memory_utilization,
    }  # fmt: skip
    if profile:
        meta["device_profile"] = profile
    return meta


def plan_around_knee(sweep: Sweep, profile: dict[str, Any] | None) -> KneePlan:
    """Predict the sweep's knee with the engine (uncalibrated host prior: no fit has seen these runs) and choose
    the points to measure."""
    from engine.fidelity.runs import prefix_caching_of, scenario_for_run
    from engine.knee import NO_PREEMPTION, Objective, find_knee
    from engine.workload import request_lengths

    grid = _axis_values(sweep)
    job = sweep.jobs[0]
    meta = job_meta(job, profile)
    lengths = request_lengths(job.workload, job.num_requests, job.seed)
    scenario = scenario_for_run(meta, lengths)
    knee = find_knee(scenario, Objective.THROUGHPUT, cliff=NO_PREEMPTION, requests=lengths,
                     prefix_caching=prefix_caching_of(meta))  # fmt: skip
    k = knee.recommended.max_num_seqs if knee.feasible else None
    planned = choose_points(grid, k)
    return KneePlan(tuple(grid), k, tuple(planned), scenario.gpu if profile else "cpu-host (catalog)", knee.predictions)


def choose_points(grid: list[int], knee: int | None) -> list[int]:
    """Dense within BAND of the knee, the lowest value, and one value per quadrupling above the band."""
    if knee is None:  # nothing is predicted calm: the lowest values are where the knee must be
        return grid[: max(3, len(grid) // 2)]
    chosen = {grid[0]} | {v for v in grid if knee / BAND <= v <= knee * BAND}
    last = max(v for v in chosen)
    for v in grid:
        if v > knee * BAND and v >= 4 * last:
            chosen.add(v)
            last = v
    return sorted(chosen)


def run_around_knee(
    sweep: Sweep, inbox: Path, progress: SweepProgress | None, profile: dict[str, Any] | None
) -> KneeSweepReport:
    """Run the planned points in ascending order, stopping the axis after PATIENCE preempting runs past the knee."""
    plan = plan_around_knee(sweep, profile)
    out = KneeSweepReport(plan)
    jobs = {int(j.engine.max_num_seqs): j for j in sweep.jobs}
    streak = 0
    for value in plan.planned:
        one = run_sweep(replace(sweep, jobs=(jobs[value],)), inbox, progress, profile)
        out.report.results += one.results
        out.report.skipped += one.skipped
        out.report.recovered += one.recovered
        preemptions = _preemptions(one, inbox, jobs[value])
        if preemptions is None:
            continue
        out.measured[value] = preemptions
        past = plan.predicted_knee is not None and value > plan.predicted_knee
        streak = streak + 1 if past and preemptions > 0 else 0
        if streak >= PATIENCE:
            out.stopped_at = value
            break
    return out


def _preemptions(one: SweepReport, inbox: Path, job: JobSpec) -> int | None:
    """Measured preemptions of a point just run; of a bundle already complete, 1 if it preempted at all (its
    collector block records the first preemption's time, not the count), else 0."""
    complete = [r for r in one.results if r.status == "complete"]
    if complete:
        return complete[0].preemptions
    for run_file in (inbox / job.run_id / "run.json", inbox / "done" / job.run_id / "run.json"):
        if run_file.is_file():
            collector = json.loads(run_file.read_text(encoding="utf-8")).get("collector") or {}
            return 0 if collector.get("first_preemption_s") is None else 1
    return None
