"""Fitting the step model's free parameters to measured runs, and cross-validating the fit.

Parameters (``engine.perf.Calibration``) are fitted in log space, so "twice as slow" weighs the same at every
scale: decode bandwidth efficiency, prefill compute efficiency, the per-step overhead as a fixed part plus a part
per scheduled sequence, the per-layer gap (only when the runs differ in layer count, else it is the same thing
as the fixed step overhead) and link efficiency (only when a run uses TP or PP). A parameter the runs cannot see
(changing it tenfold moves no figure by 1 %) keeps its default and is reported as fixed.

The loss is the sum over runs of squared log ratios predicted/measured of completion time, mean TTFT, TPOT, E2E
and cliff onset (a run where only one side preempts pays log 2), plus a weak pull towards the defaults so that
directions the runs do not determine stay where they were. Nelder-Mead (numpy only, derivative-free: the
simulator's figures are step functions of the parameters) after a one-dimensional search over a common scale.
Runs submitted at t=0 are re-timed from their step trace (``engine.fidelity.steps``), others predicted in full.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from engine.fidelity.runs import RunCase
from engine.fidelity.steps import StepTrace, trace_run
from engine.perf import Calibration
from engine.simulate import predict

# name: (lower, upper) bounds; efficiencies may pass 1 because a measured host profile is itself an estimate.
PARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "mem_efficiency": (0.01, 3.0),
    "compute_efficiency": (0.005, 3.0),
    "step_overhead_s": (1e-6, 2.0),
    "per_seq_overhead_s": (1e-8, 0.05),
    "layer_overhead_s": (1e-8, 0.05),
    "per_seq_layer_overhead_s": (1e-9, 0.01),
    "link_efficiency": (0.01, 3.0),
}
LOSS_METRICS: dict[str, float] = {  # figure: weight
    "completion_s": 1.0,
    "ttft_mean_s": 1.0,
    "tpot_mean_s": 1.0,
    "e2e_mean_s": 1.0,
    "cliff_onset_s": 1.0,
}
ONE_SIDED_CLIFF_PENALTY = math.log(2.0)
PRIOR_WEIGHT = 1e-3  # per parameter, on the log distance from the default
SENSITIVITY_MIN = 0.01  # a 10x change must move some figure by more than 1 % for a parameter to be fitted
SENSITIVITY_FACTORS = (0.1, 10.0)
FITTER_VERSION = "nm-log-1"


class CalibrationError(ValueError):
    """Runs that cannot be fitted (none usable, mixed devices); the message says what to change."""


def start_value(name: str, base: Calibration, case: RunCase) -> float:
    """A parameter's value before fitting: the starting calibration's, else the device's default, else perf's."""
    for value in (getattr(base, name), getattr(case.device, name, None), getattr(Calibration(), name)):
        if value is not None:
            # A cost that defaults to 0 (off) starts just above its lower bound, where it changes nothing yet.
            return float(value) if value > 0 else PARAM_BOUNDS[name][0] * 100
    raise CalibrationError(f"parameter {name!r} has no default")


def visible_params(
    evs: Sequence[Evaluator],
    names: Sequence[str],
    values: dict[str, float],
    calibration_at: Callable[[np.ndarray, Sequence[str]], Calibration],
) -> list[str]:
    """The parameters for which a tenfold change moves some figure of some run by more than SENSITIVITY_MIN (log)."""
    x = np.log([values[n] for n in names])
    before = [ev.figures(calibration_at(x, names)) for ev in evs]
    keep = []
    for i, name in enumerate(names):
        moved = 0.0
        for factor in SENSITIVITY_FACTORS:
            xi = x.copy()
            xi[i] += math.log(factor)
            cal = calibration_at(xi, names)
            for ev, b in zip(evs, before, strict=True):
                after = ev.figures(cal)
                for metric in LOSS_METRICS:
                    p, q = after.get(metric), b.get(metric)
                    if p and q:
                        moved = max(moved, abs(math.log(p / q)))
        if moved > SENSITIVITY_MIN:
            keep.append(name)
    return keep


class Evaluator:
    """Predicted figures of one run for any calibration: re-timed from a step trace when it can be."""

    def __init__(self, case: RunCase) -> None:
        self.case = case
        self.trace: StepTrace | None = (
            trace_run(case.scenario, case.lengths, case.prefix_caching, case.arrival_steps)
            if case.arrivals_at_start
            else None
        )

    def figures(self, calibration: Calibration) -> dict[str, float | None]:
        if self.trace is not None:
            return self.trace.evaluate(calibration, percentiles=False)
        return predict(
            self.case.scenario,
            self.case.lengths,
            calibration,
            prefix_caching=self.case.prefix_caching,
            arrivals_s=self.case.arrivals_s,
        ).summary


def log_residuals(predicted: dict[str, Any], measured: dict[str, Any]) -> dict[str, float]:
    """log(predicted / measured) per loss figure that both sides have; a one-sided cliff pays a fixed penalty."""
    out: dict[str, float] = {}
    for metric in LOSS_METRICS:
        p, m = predicted.get(metric), measured.get(metric)
        if metric == "cliff_onset_s" and (p is None) != (m is None):
            out[metric] = ONE_SIDED_CLIFF_PENALTY if p is not None else -ONE_SIDED_CLIFF_PENALTY
            continue
        if p is None or m is None or not (p > 0 and m > 0):
            continue
        out[metric] = math.log(p / m)
    return out


@dataclass
class FitResult:
    """A fitted calibration and how it was obtained (stored by ``Store.save_calibration``)."""

    calibration: Calibration
    group: tuple[str, str]  # (device_key, vllm_version)
    run_ids: list[str]
    fitted: dict[str, float]  # parameter -> fitted value
    fixed: dict[str, float]  # parameter -> value kept (default), because the runs cannot see it
    start: dict[str, float]
    loss: float
    loss_start: float
    evaluations: int
    residuals: dict[str, dict[str, float]]  # run_id -> figure -> log(pred/meas) under the fit
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def as_record(self) -> dict[str, Any]:
        return {
            "device_key": self.group[0],
            "vllm_version": self.group[1],
            "created_at": self.created_at,
            "fitter": FITTER_VERSION,
            "run_ids": list(self.run_ids),
            "params": {**self.fixed, **self.fitted},
            "fitted": sorted(self.fitted),
            "loss": self.loss,
            "loss_start": self.loss_start,
            "evaluations": self.evaluations,
            "residuals": self.residuals,
            "source": self.calibration.source,
        }


def candidate_params(cases: Sequence[RunCase]) -> list[str]:
    """Parameters worth trying for these runs (before the sensitivity check)."""
    names = ["mem_efficiency", "compute_efficiency", "step_overhead_s", "per_seq_overhead_s"]
    layers = {_layers(c) for c in cases}
    if len(layers) > 1:  # only runs of different depth can tell per-layer from per-step costs
        names += ["layer_overhead_s", "per_seq_layer_overhead_s"]
    if any(c.scenario.tp > 1 or c.scenario.pp > 1 for c in cases):
        names.append("link_efficiency")
    return names


def _layers(case: RunCase) -> int:
    from engine.catalog import load_model

    return load_model(case.scenario.model).num_layers


def nelder_mead(
    fn: Callable[[np.ndarray], float],
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    step: float = 0.5,
    max_evals: int = 600,
    tol: float = 1e-7,
) -> tuple[np.ndarray, float, int]:
    """Minimise ``fn`` inside a box (points are clipped into it); adaptive coefficients (Gao & Han 2012)."""
    n = len(x0)
    alpha, gamma = 1.0, 1.0 + 2.0 / n
    rho, sigma = 0.75 - 1.0 / (2 * n), 1.0 - 1.0 / n
    evals = 0

    def f(x: np.ndarray) -> float:
        nonlocal evals
        evals += 1
        return fn(x)

    pts = [np.clip(x0, lower, upper)]
    for i in range(n):
        x = pts[0].copy()
        x[i] = x[i] + step if x[i] + step <= upper[i] else x[i] - step
        pts.append(np.clip(x, lower, upper))
    simplex = np.array(pts)
    values = np.array([f(x) for x in simplex])
    while evals < max_evals:
        order = np.argsort(values)
        simplex, values = simplex[order], values[order]
        if values[-1] - values[0] <= tol * (abs(values[0]) + tol) and np.ptp(simplex, axis=0).max() < 1e-4:
            break
        centroid = simplex[:-1].mean(axis=0)
        xr = np.clip(centroid + alpha * (centroid - simplex[-1]), lower, upper)
        fr = f(xr)
        if fr < values[0]:
            xe = np.clip(centroid + gamma * (xr - centroid), lower, upper)
            fe = f(xe)
            simplex[-1], values[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = xr, fr
        else:
            outside = fr < values[-1]
            xc = centroid + rho * ((xr if outside else simplex[-1]) - centroid)
            xc = np.clip(xc, lower, upper)
            fc = f(xc)
            if fc < (fr if outside else values[-1]):
                simplex[-1], values[-1] = xc, fc
            else:
                for i in range(1, n + 1):
                    simplex[i] = simplex[0] + sigma * (simplex[i] - simplex[0])
                    values[i] = f(simplex[i])
    best = int(np.argmin(values))
    return simplex[best], float(values[best]), evals


def _golden(fn: Callable[[float], float], lo: float, hi: float, iters: int = 24) -> float:
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = fn(c), fn(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = fn(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = fn(d)
    return (a + b) / 2


def fit(
    cases: Sequence[RunCase],
    *,
    evaluators: dict[str, Evaluator] | None = None,
    start: Calibration | None = None,
    params: Sequence[str] | None = None,
    label: str = "",
    max_evals: int = 800,
) -> FitResult:
    """Fit one calibration to runs of one (device, vLLM version) group."""
    if not cases:
        raise CalibrationError("no runs to fit: name runs that finished and have request rows")
    groups = {c.group for c in cases}
    if len(groups) > 1:
        raise CalibrationError(
            f"runs of different devices or vLLM versions cannot share one calibration: {sorted(groups)}; "
            "fit each group on its own (`python -m engine calibrate` does)"
        )
    evaluators = evaluators or {}
    evs = [evaluators.get(c.run_id) or Evaluator(c) for c in cases]
    base = start or Calibration()
    values0 = {n: start_value(n, base, cases[0]) for n in PARAM_BOUNDS}
    tried = list(params) if params is not None else candidate_params(cases)

    def calibration_at(x: np.ndarray, names: Sequence[str]) -> Calibration:
        return replace(base, **{n: float(math.exp(v)) for n, v in zip(names, x, strict=True)})

    def residual_vector(cal: Calibration) -> list[float]:
        out: list[float] = []
        for case, ev in zip(cases, evs, strict=True):
            res = log_residuals(ev.figures(cal), case.measured)
            out.extend(LOSS_METRICS[k] * v for k, v in res.items())
        return out

    names = visible_params(evs, tried, values0, calibration_at)
    fixed_values = {n: v for n, v in values0.items() if n not in names}
    base = replace(base, **{n: v for n, v in fixed_values.items() if n in tried})
    lo = np.log([PARAM_BOUNDS[n][0] for n in names])
    hi = np.log([PARAM_BOUNDS[n][1] for n in names])
    x0 = np.clip(np.log([values0[n] for n in names]), lo, hi)

    def loss(x: np.ndarray) -> float:
        r = residual_vector(calibration_at(x, names))
        return float(np.sum(np.square(r))) + PRIOR_WEIGHT * float(np.sum((x - x0) ** 2))

    loss_start = loss(x0)
    evaluations = 1
    if names:
        # 1-D search over a common slowdown: efficiencies divided, overheads multiplied.
        sign = np.array([-1.0 if n.endswith("efficiency") else 1.0 for n in names])

        def along(s: float) -> float:
            return loss(np.clip(x0 + sign * s, lo, hi))

        s_best = _golden(along, -4.0, 4.0)
        evaluations += 26
        x1 = np.clip(x0 + sign * s_best, lo, hi)
        x_best, f_best, used = nelder_mead(loss, x1, lo, hi, max_evals=max_evals)
        evaluations += used
        x_best, f_best2, used = nelder_mead(loss, x_best, lo, hi, step=0.2, max_evals=max_evals // 3)
        evaluations += used
        f_best = min(f_best, f_best2)
    else:
        x_best, f_best = x0, loss_start
    fitted = {n: float(math.exp(v)) for n, v in zip(names, x_best, strict=True)}
    fixed_values = {n: v for n, v in fixed_values.items() if n in tried}
    group = cases[0].group
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    source = label or f"fit on {len(cases)} run(s) of {group[0]} / vLLM {group[1]} at {when}"
    calibration = replace(base, **fitted, source=source)
    residuals = {c.run_id: log_residuals(ev.figures(calibration), c.measured) for c, ev in zip(cases, evs, strict=True)}
    return FitResult(
        calibration=calibration,
        group=group,
        run_ids=[c.run_id for c in cases],
        fitted=fitted,
        fixed={k: float(v) for k, v in fixed_values.items()},
        start={n: float(math.exp(v)) for n, v in zip(names, x0, strict=True)},
        loss=f_best,
        loss_start=loss_start,
        evaluations=evaluations,
        residuals=residuals,
        created_at=when,
    )


@dataclass
class HeldOut:
    """The calibration a run is predicted with when it is scored: fitted without it (or none at all)."""

    run_id: str
    calibration: Calibration
    fold: int
    folds: int
    train_run_ids: list[str]


def folds_of(run_ids: Sequence[str], k: int, strata: dict[str, tuple[Any, ...]] | None = None) -> list[list[str]]:
    """Deterministic k-fold split (leave-one-out when k >= runs): runs ordered by their stratum, then by id, and
    dealt round-robin — so runs alike (e.g. the same concurrency) land in different folds and every fit sees the
    range of runs it is scored on."""
    strata = strata or {}
    ordered = sorted(run_ids, key=lambda r: (strata.get(r, ()), r))
    k = max(1, min(k, len(ordered)))
    return [sorted(ordered[i::k]) for i in range(k)]


def stratum(case: RunCase) -> tuple[Any, ...]:
    """What a fold should mix: concurrency per replica (batch size), then model depth."""
    s = case.scenario
    concurrency = min(-(-len(case.lengths) // s.dp), s.max_num_seqs)
    return (concurrency, case.meta.get("model_name") or "")


def cross_validate(cases: Sequence[RunCase], k: int = 5, max_evals: int = 400) -> dict[str, HeldOut]:
    """For every run, a calibration fitted on the other folds of its (device, vLLM version) group.

    A group with one run cannot be held out from itself: that run is scored uncalibrated (defaults / profile).
    """
    by_group: dict[tuple[str, str], list[RunCase]] = {}
    for c in cases:
        by_group.setdefault(c.group, []).append(c)
    out: dict[str, HeldOut] = {}
    for group, members in sorted(by_group.items()):
        evaluators = {c.run_id: Evaluator(c) for c in members}
        if len(members) < 2:
            for c in members:
                out[c.run_id] = HeldOut(
                    c.run_id, Calibration(source="defaults (no other run of its group to fit)"), 0, 0, []
                )
            continue
        splits = folds_of([c.run_id for c in members], k, {c.run_id: stratum(c) for c in members})
        for i, held in enumerate(splits):
            train = [c for c in members if c.run_id not in held]
            label = (
                f"cross-validation fold {i + 1}/{len(splits)}: fit on {len(train)} run(s) of {group[0]} / "
                f"vLLM {group[1]}, this run held out"
            )
            result = fit(train, evaluators=evaluators, label=label, max_evals=max_evals)
            for run_id in held:
                out[run_id] = HeldOut(run_id, result.calibration, i + 1, len(splits), [c.run_id for c in train])
    return out


MIN_RUNS_PER_CALIBRATION = 2


def fit_groups(cases: Sequence[RunCase], max_evals: int = 800) -> list[FitResult]:
    """One calibration per (device, vLLM version) group with at least MIN_RUNS_PER_CALIBRATION runs (a single run
    fits anything, its parameters would mean nothing), fitted on all of its runs."""
    by_group: dict[tuple[str, str], list[RunCase]] = {}
    for c in cases:
        by_group.setdefault(c.group, []).append(c)
    return [
        fit(members, max_evals=max_evals)
        for _, members in sorted(by_group.items())
        if len(members) >= MIN_RUNS_PER_CALIBRATION
    ]
