"""Knee-bounded sweeps (``run SWEEP --around-knee`` or ``around_knee = true`` under ``[sweep]``): measure densely
around the engine's predicted knee and sparsely elsewhere, and stop once measured runs preempt past it.

Only a sweep whose single axis is ``max_num_seqs`` can be bounded this way (the knee is a max_num_seqs); anything
else is an error that says so. The plan, from the plain grid G (ascending) and the predicted knee k: the last value
*of G* at which the engine expects no preemption (engine.knee.knee_on_grid) — the same definition, on the same grid,
as the measured knee it is compared with (the last measured setting without preemption). Not engine.knee's
recommendation: that is the smallest setting within 1 % of the best on its own half-octave ladder, a tie-break that
a flat throughput curve decides (priced with the loaded sweep host's profile, the preset's predicted throughput rises
1.2 % from 4 to 7: the recommendation was 4 while the engine predicted calm up to 7 and 10 preemptions at 8, exactly
as measured), and the ladder lacks 5 and 7.

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
            f"predicted knee (last grid value without predicted preemption): max_num_seqs {self.predicted_knee} "
            f"on {self.device} "
            f"({self.predictions} predictions); plain grid {len(self.grid)} points {list(self.grid)}, "
            f"planned {len(self.planned)} {list(self.planned)}"
        )


@dataclass
class KneeSweepReport:
    plan: KneePlan
    report: SweepReport = field(default_factory=SweepReport)
    measured: dict[int, int] = field(default_factory=dict)  # max_num_seqs -> measured preemptions
    throughput: dict[int, float] = field(default_factory=dict)  # max_num_seqs -> measured generation tokens/s
    stopped_at: int | None = None  # the value after which the axis stopped

    def measured_knee(self) -> int | None:
        """The last measured setting without preemption."""
        calm = [v for v, p in sorted(self.measured.items()) if p == 0]
        return calm[-1] if calm else None

    def measured_throughput_knee(self) -> int | None:
        """The measured setting of highest generation throughput (the issue's other definition)."""
        return max(self.throughput, key=lambda v: self.throughput[v]) if self.throughput else None

    def grid_steps(self, a: int | None, b: int | None) -> int | None:
        """Distance between two settings in steps of the plain grid."""
        g = self.plan.grid
        return abs(g.index(a) - g.index(b)) if a in g and b in g else None


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


def predict_grid(sweep: Sweep, profile: dict[str, Any] | None, also: tuple[int, ...] = ()):  # type: ignore[no-untyped-def]
    """The engine's knee on the sweep's own grid (engine.knee.knee_on_grid; uncalibrated host prior: no fit has
    seen these runs), with the settings in ``also`` predicted too."""
    from engine.fidelity.runs import prefix_caching_of, scenario_for_run
    from engine.knee import knee_on_grid
    from engine.workload import request_lengths

    grid = _axis_values(sweep)
    job = sweep.jobs[0]
    meta = job_meta(job, profile)
    lengths = request_lengths(job.workload, job.num_requests, job.seed)
    scenario = scenario_for_run(meta, lengths)
    found = knee_on_grid(scenario, grid, requests=lengths, prefix_caching=prefix_caching_of(meta), also=also)
    return found, (scenario.gpu if profile else "cpu-host (catalog)")


def plan_around_knee(sweep: Sweep, profile: dict[str, Any] | None) -> KneePlan:
    """Predict the sweep's knee on its own grid and choose the points to measure."""
    found, device = predict_grid(sweep, profile)
    planned = choose_points(list(found.grid), found.last_calm)
    return KneePlan(found.grid, found.last_calm, tuple(planned), device, found.predictions)


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
        tps = _throughput(inbox, jobs[value])
        if tps is not None:
            out.throughput[value] = tps
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


def _throughput(inbox: Path, job: JobSpec) -> float | None:
    """Measured generation tokens/s of a complete point: its requests' output tokens over the last one's finish
    time (the batch starts at 0), as engine.store's measured summary computes it."""
    import polars as pl

    for folder in (inbox / job.run_id, inbox / "done" / job.run_id):
        path = folder / "requests.parquet"
        if path.is_file():
            r = pl.read_parquet(path, columns=["output_tokens", "finished_s"])
            end = r["finished_s"].max()
            return float(r["output_tokens"].sum()) / float(end) if end else None  # type: ignore[arg-type]
    return None


def describe_outcome(sweep: Sweep, out: KneeSweepReport, profile: dict[str, Any] | None) -> list[str]:
    """Per measured point, measured vs predicted preemptions and throughput; both knees (the issue's two
    definitions), measured and predicted on the same points, and how many grid steps apart."""
    found, _ = predict_grid(sweep, profile, also=tuple(out.measured))
    lines = ["max_num_seqs: measured preemptions, gen tok/s | predicted (uncalibrated host prior)"]
    for v in sorted(out.measured):
        p = found.point(v)
        tps = out.throughput.get(v)
        lines.append(
            f"  {v:>4}: {out.measured[v]:>5}, {f'{tps:,.1f}' if tps is not None else '—':>8} | "
            + (f"{p.preemptions:>5}, {p.generation_tokens_per_s or 0:,.1f}" if p is not None else "—")
        )
    calm, top = out.measured_knee(), out.measured_throughput_knee()
    p_top = found.highest_throughput(tuple(out.throughput))
    lines.append(
        f"knee, last without preemption: measured {calm}, predicted {found.last_calm} (on the plain grid), "
        f"{_steps(out, calm, found.last_calm)} grid step(s) apart"
    )
    lines.append(
        f"knee, highest throughput among the measured points: measured {top}, predicted {p_top}, "
        f"{_steps(out, top, p_top)} grid step(s) apart"
    )
    return lines


def _steps(out: KneeSweepReport, a: int | None, b: int | None) -> str:
    steps = out.grid_steps(a, b)
    return "—" if steps is None else str(steps)
