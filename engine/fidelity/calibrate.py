"""Fitting the step model's physical parameters to measured or published runs, and cross-validating the fit.

Parameters (``engine.perf.Calibration``) are fitted in log space, so "twice as slow" weighs the same at every
scale: decode bandwidth efficiency and prefill compute efficiency (fractions of the device's peak, bounded to
(0, 1]: an efficiency above 1 is a modelling error, so it is clamped by the bound and flagged, never shipped), the
per-step overhead as a fixed part plus a part per scheduled sequence, the per-layer gap (only when the runs differ
in layer count, else it is the same thing as the fixed step overhead), the all-reduce's α-β (link latency per hop
and link efficiency, only when a run uses TP or PP), the PP hand-off latency (only with PP), MoE routing per layer
(only with a MoE model) and, on CPU hosts, the contention of ranks sharing one host (only when a run has several).
A parameter the runs cannot see (changing it tenfold moves no figure by 1 %) keeps its default and is reported
as fixed.

Residuals are log ratios predicted/measured of completion time, mean TTFT, TPOT, E2E and cliff onset (a run where
only one side preempts pays log 2), plus a weak pull towards the defaults so that directions the runs do not
determine stay where they were. The optimizer is ``scipy.optimize.least_squares`` (trust-region reflective, box
bounds) after a one-dimensional search along a common slowdown; the Jacobian is taken by forward differences of
2 % in log space (the simulator's figures are step functions of the parameters at finer scales), and each
parameter's uncertainty is the square root of the diagonal of s²·(JᵀJ)⁻¹ at the solution, s² the residual
variance (a factor: the value is known within ×/÷ exp(σ)). Runs submitted at t=0 are re-timed from their step trace
(``engine.fidelity.steps``), others predicted in full.
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
from engine.fidelity.workers import figures_of
from engine.perf import Calibration
from engine.simulate import predict

# name: (lower, upper) bounds. Efficiencies are fractions of the device's peak (datasheet or measured host profile):
# at most 1 — a fit that wants more is missing a cost, and says so (FitResult.at_bound) instead of shipping it.
PARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "mem_efficiency": (0.01, 1.0),
    "compute_efficiency": (0.005, 1.0),
    "step_overhead_s": (1e-6, 2.0),
    "per_seq_overhead_s": (1e-8, 0.05),
    "layer_overhead_s": (1e-8, 0.05),
    "per_seq_layer_overhead_s": (1e-9, 0.01),
    "link_efficiency": (0.01, 1.0),
    "link_latency_s": (1e-7, 1e-3),
    "pp_handoff_latency_s": (1e-7, 0.05),
    "moe_layer_overhead_s": (1e-7, 0.01),
    # The busiest expert's tokens over the mean (1: perfectly balanced). With a few tokens per expert (a decode
    # batch: 128 sequences × top-8 over 256 experts is 4 each on average) top-k routing leaves the busiest with
    # several times the mean; 4 bounds it.
    "moe_imbalance": (1.0, 4.0),
    "host_contention": (1e-3, 4.0),
    "api_request_s": (1e-6, 0.1),
    "api_token_s": (1e-7, 0.01),
    "api_step_s": (1e-7, 0.01),
}
# On GPUs the link terms have physical ceilings far below the CPU-wide box above (which also covers shared-memory
# "links" between CPU ranks): a ring hop inside an NVLink/NVSwitch or PCIe node is a few µs (the catalog's 4–15 µs
# per hop in gpus.toml are already generous), and a pipeline hand-off is one NCCL send/recv of a micro-batch's
# activations, tens of µs. A fit that wants 25 ms per hand-off (seen: the paper's 14B PP=2×TP=4 at 1,172 s pulled
# it there) is explaining something else with the wrong term; the bound stops it and the fit flags it.
#
# The API server's serial work per streamed token has a ceiling that public runs show: one vLLM OpenAI server streamed
# 6,582.87 output tok/s to `vllm bench serve` (openai-chat, Llama-3.1-8B-Instruct, 1,000 ShareGPT prompts; the
# description of https://github.com/vllm-project/vllm/pull/18566), so its per-token work is at most 1/6,583 s =
# 152 µs, less the engine's share of that time. A fold fit above it (seen: 533 µs from GPUStack's 4-token-output
# H100 runs, which capped RunPod's Qwen3-8B at 1,876 tok/s against 5,473–9,821 measured) stands in for a frontend
# cost the engine does not model, the request intake delaying token streaming.
#
# The engine core's host work per step has ceilings too. Per batch (``step_overhead_s``): vLLM's V0, before the work
# that V1 finished, left the GPU idle about 4 ms per decode step waiting on the host ("Each highlighted redbox is
# about 4ms of GPU bubble", "5-13ms of GPU bubble" in its motivation; https://github.com/vllm-project/vllm/issues/6854,
# 2024); 5 ms caps it. A fold fit of 14.6 ms (on GPUStack's A100 runs, 24 of 32 MoE, all predicted too fast) priced
# Dennis Lee's dense 7B at +33 %: a cost the step model does not see, put on the host where it is not. Per sequence
# (``per_seq_overhead_s``): vLLM 0.32's own V1 Scheduler (``schedule`` + ``update_from_output``) costs 10–11 µs per
# running request per decode step on this project's 2-core Xeon host (tests/bench/test_vllm_host_cost.py); 30 µs
# leaves as much again twice over for the model runner's per-request bookkeeping. A fold fit of 89 µs (on GPUStack's
# H100 runs, which send 100–1,000 requests at once) made every step of RunPod's Qwen3-8B at 256 concurrent requests
# 23 ms of host time, under async scheduling the whole step.
GPU_BOUNDS: dict[str, tuple[float, float]] = {
    "link_latency_s": (1e-7, 2e-5),
    "pp_handoff_latency_s": (1e-7, 5e-4),
    "api_token_s": (1e-7, 1.5e-4),
    "step_overhead_s": (1e-6, 5e-3),
    "per_seq_overhead_s": (1e-8, 3e-5),
}


def bounds_of(name: str, kind: str = "cpu") -> tuple[float, float]:
    """A parameter's (lower, upper) bound on a device kind: GPU_BOUNDS where a GPU's is tighter, else PARAM_BOUNDS."""
    return GPU_BOUNDS.get(name, PARAM_BOUNDS[name]) if kind == "gpu" else PARAM_BOUNDS[name]


EFFICIENCY_PEAK = {  # efficiency: the device's peak it is a fraction of (engine.catalog.GpuSpec)
    "mem_efficiency": "hbm_bytes_per_s",
    "compute_efficiency": "bf16_flops",
    "link_efficiency": "link_bytes_per_s",
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
# Start values of costs that default to 0: the API server's serial work per request (HTTP, chat template,
# tokenization) and per streamed token is milliseconds and tens of microseconds on a Python server; starting there,
# a bench run whose requests queue at the intake moves the fit, while 1e-4 s lies where nothing changes yet.
OFF_START = {"api_request_s": 1e-3, "api_token_s": 1e-5, "api_step_s": 1e-4}
FITTER_VERSION = "lsq-log-1"
JACOBIAN_STEP = 0.02  # forward difference in log space: 2 % of each parameter
# A fitted value within 1 % of a bound is flagged as at it: a short search (the bench fits' 40 evaluations) stops
# just inside the bound it is pressing on (seen: 4.95–4.99 ms against a 5 ms ceiling), and that is the same finding.
AT_BOUND_LOG = 0.01


def bounds_reached(names: Sequence[str], x: Any, lo: Any, hi: Any) -> dict[str, str]:
    """The parameters whose fitted log value ``x`` lies within AT_BOUND_LOG of its log bound: name → side."""
    sides = {}
    for n, v, a, b in zip(names, x, lo, hi, strict=True):
        if v <= a + AT_BOUND_LOG:
            sides[n] = "lower"
        elif v >= b - AT_BOUND_LOG:
            sides[n] = "upper"
    return sides


class CalibrationError(ValueError):
    """Runs that cannot be fitted (none usable, mixed devices); the message says what to change."""


def start_value(name: str, base: Calibration, case: RunCase) -> float:
    """A parameter's value before fitting: the starting calibration's, else the device's default, else perf's
    (clipped into its bounds: a device default above 1 would start the fit outside the physical box)."""
    lo, hi = bounds_of(name, getattr(case.device, "kind", "cpu"))
    for value in (getattr(base, name), getattr(case.device, name, None), getattr(Calibration(), name)):
        if value is not None:
            # A cost that defaults to 0 (off) starts where it begins to matter (OFF_START), else just above its
            # lower bound: a start deep in a flat region leaves the gradient at zero and the fit never moves it.
            return min(max(float(value), lo), hi) if value > 0 else OFF_START.get(name, lo * 100)
    raise CalibrationError(f"parameter {name!r} has no default")


def visible_params(
    evs: Sequence[Evaluator],
    names: Sequence[str],
    values: dict[str, float],
    calibration_at: Callable[[np.ndarray, Sequence[str]], Calibration],
) -> list[str]:
    """The parameters for which a tenfold change moves some figure of some run by more than SENSITIVITY_MIN (log)."""
    x = np.log([values[n] for n in names])
    before = figures_of(evs, calibration_at(x, names))
    keep = []
    for i, name in enumerate(names):
        moved = 0.0
        for factor in SENSITIVITY_FACTORS:
            xi = x.copy()
            xi[i] += math.log(factor)
            cal = calibration_at(xi, names)
            for after, b in zip(figures_of(evs, cal), before, strict=True):
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
        ).summary.as_dict()


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
    # parameter -> σ of its log (the value is known within ×/÷ exp(σ)); None where the residuals are too few
    uncertainty: dict[str, float | None] = field(default_factory=dict)
    at_bound: dict[str, str] = field(default_factory=dict)  # parameter -> "lower" | "upper": flagged, see module
    device_kind: str = "cpu"  # whose bounds applied (bounds_of)

    def as_record(self) -> dict[str, Any]:
        """The stored record; ``uncertainty`` and ``at_bound`` travel with it (export, CLI) outside the table."""
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
            "uncertainty": dict(self.uncertainty),
            "at_bound": dict(self.at_bound),
        }

    def warnings(self) -> list[str]:
        """A sentence per parameter held by a bound: an efficiency of 1 means the model lacks a cost."""
        out = []
        for name, side in sorted(self.at_bound.items()):
            if side == "upper" and name in EFFICIENCY_PEAK:
                out.append(
                    f"{name} wants more than 100 % of the device's peak ({EFFICIENCY_PEAK[name]}): clamped at 1; the "
                    "step model misses a cost or over-counts bytes/FLOPs on these runs (a modelling error to fix)"
                )
            else:
                bound = bounds_of(name, self.device_kind)[0 if side == "lower" else 1]
                out.append(f"{name} sits at its {side} bound {bound:g}")
        return out


def parameter_rows(result: FitResult, device: Any) -> list[dict[str, Any]]:
    """Each fitted parameter beside the device's datasheet (or measured) figure: value, ×/÷ uncertainty, bound."""
    rows = []
    for name, value in sorted(result.fitted.items()):
        sigma = result.uncertainty.get(name)
        peak_key = EFFICIENCY_PEAK.get(name)
        peak = float(getattr(device, peak_key)) if peak_key and device is not None else None
        # the prior it was pulled towards: the device's catalog default (gpus.toml; an efficiency's peak is the
        # datasheet figure) or engine.perf's for costs no catalog entry states
        prior = getattr(device, name, None) if device is not None else None
        prior = getattr(Calibration(), name) if prior is None else prior
        rows.append(
            {
                "parameter": name,
                "value": value,
                "sigma_log": sigma,
                "low": value * math.exp(-sigma) if sigma is not None else None,
                "high": value * math.exp(sigma) if sigma is not None else None,
                "datasheet_name": peak_key,
                "datasheet": peak,
                "effective": value * peak if peak else None,
                "effective_low": value * math.exp(-sigma) * peak if (peak and sigma is not None) else None,
                "effective_high": min(value * math.exp(sigma), 1.0) * peak if (peak and sigma is not None) else None,
                "default": prior,
                "at_bound": result.at_bound.get(name),
            }
        )
    return rows


def candidate_params(cases: Sequence[RunCase]) -> list[str]:
    """Parameters worth trying for these runs (before the sensitivity check): each only where a run exercises it."""
    names = ["mem_efficiency", "compute_efficiency", "step_overhead_s", "per_seq_overhead_s"]
    layers = {_layers(c) for c in cases}
    # Only runs of different depth can tell per-layer from per-step costs; on GPUs CUDA graphs fold the per-layer
    # launch gaps into the step, so the per-layer terms are fitted on CPU hosts only.
    if len(layers) > 1 and all(c.device.kind == "cpu" for c in cases):
        names += ["layer_overhead_s", "per_seq_layer_overhead_s"]
    if any(c.scenario.tp > 1 or c.scenario.pp > 1 for c in cases):
        names += ["link_efficiency", "link_latency_s"]
    if any(c.scenario.pp > 1 for c in cases):
        names.append("pp_handoff_latency_s")
    if any(_is_moe(c) for c in cases):
        names.append("moe_layer_overhead_s")
    if any(c.device.kind == "cpu" and int(getattr(c.device, "ranks_sharing", 1) or 1) > 1 for c in cases):
        names.append("host_contention")
    if any(getattr(c, "kind", "") == "bench" for c in cases):  # served through the API server (engine.served)
        names += ["api_request_s", "api_token_s", "api_step_s"]
    return names


def _layers(case: RunCase) -> int:
    from engine.catalog import load_model

    return load_model(case.scenario.model).num_layers


def _is_moe(case: RunCase) -> bool:
    from engine.catalog import load_model

    return bool(load_model(case.scenario.model).is_moe)


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


class _Problem:
    """The least-squares problem of one fit: residuals (data, then the prior) as a function of log parameters."""

    def __init__(self, cases: Sequence[RunCase], evs: Sequence[Evaluator], names: Sequence[str], base: Calibration,
                 x0: np.ndarray) -> None:  # fmt: skip
        self.cases, self.evs, self.names, self.base, self.x0 = cases, evs, list(names), base, x0
        # Fixed residual slots: every loss figure the run measured (a cliff slot always: one-sided pays log 2).
        self.slots = [
            (i, metric)
            for i, case in enumerate(cases)
            for metric in LOSS_METRICS
            if metric == "cliff_onset_s" or case.measured.get(metric) is not None
        ]
        self.evaluations = 0

    def calibration(self, x: np.ndarray) -> Calibration:
        return replace(self.base, **{n: float(math.exp(v)) for n, v in zip(self.names, x, strict=True)})

    def data(self, x: np.ndarray) -> np.ndarray:
        self.evaluations += 1
        cal = self.calibration(x)
        pairs = zip(self.cases, figures_of(self.evs, cal), strict=True)
        residuals = [log_residuals(figures, case.measured) for case, figures in pairs]
        return np.array([LOSS_METRICS[m] * residuals[i].get(m, 0.0) for i, m in self.slots], dtype=float)

    def residuals(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.data(x), math.sqrt(PRIOR_WEIGHT) * (x - self.x0)])

    def loss(self, x: np.ndarray) -> float:
        return float(np.sum(np.square(self.residuals(x))))


def _jacobian(problem: _Problem, hi: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Forward differences of JACOBIAN_STEP in log space (backwards at an upper bound)."""

    def jac(x: np.ndarray) -> np.ndarray:
        r0 = problem.residuals(x)
        out = np.empty((len(r0), len(x)))
        for i in range(len(x)):
            h = JACOBIAN_STEP if x[i] + JACOBIAN_STEP <= hi[i] else -JACOBIAN_STEP
            xi = x.copy()
            xi[i] += h
            out[:, i] = (problem.residuals(xi) - r0) / h
        return out

    return jac


def _uncertainty(problem: _Problem, x: np.ndarray, jac: np.ndarray) -> dict[str, float | None]:
    """σ of each log parameter from the Jacobian at the solution: s²·(JᵀJ)⁻¹, s² = data residual variance."""
    data = problem.data(x)
    dof = len(data) - len(x)
    if dof <= 0 or len(x) == 0:
        return dict.fromkeys(problem.names)
    s2 = float(np.sum(np.square(data))) / dof
    cov = s2 * np.linalg.pinv(jac.T @ jac)
    return {n: float(math.sqrt(max(cov[i, i], 0.0))) for i, n in enumerate(problem.names)}


def fit(
    cases: Sequence[RunCase],
    *,
    evaluators: dict[str, Evaluator] | None = None,
    start: Calibration | None = None,
    params: Sequence[str] | None = None,
    label: str = "",
    max_evals: int = 800,
    pool: str | None = None,
) -> FitResult:
    """Fit one calibration to runs of one (device, vLLM version) group, or, with ``pool`` (its name, e.g. a
    ``pool_key``), to runs of several devices of one kind: efficiencies are fractions of each device's own
    datasheet peaks and overheads host seconds, so one set of them can describe a fleet (used where a device has
    no other source to fit on)."""
    if not cases:
        raise CalibrationError("no runs to fit: name runs that finished and have request rows")
    groups = {c.group for c in cases}
    if pool is not None:
        kinds = {getattr(c.device, "kind", "cpu") for c in cases}
        if len(kinds) > 1:
            raise CalibrationError(
                f"pooled fit {pool!r} mixes device kinds {sorted(kinds)}: a GPU's efficiencies and a CPU host's "
                "are different physics; pool runs of one kind"
            )
    elif len(groups) > 1:
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

    names = visible_params(evs, tried, values0, calibration_at)
    fixed_values = {n: v for n, v in values0.items() if n not in names and n in tried}
    base = replace(base, **fixed_values)
    kind = getattr(cases[0].device, "kind", "cpu")
    lo = np.log([bounds_of(n, kind)[0] for n in names])
    hi = np.log([bounds_of(n, kind)[1] for n in names])
    x0 = np.clip(np.log([values0[n] for n in names]), lo, hi)
    problem = _Problem(cases, evs, names, base, x0)
    loss_start = problem.loss(x0)
    x_best, f_best, uncertainty, at_bound = x0, loss_start, {}, {}
    if names:
        x_best, f_best, uncertainty = _solve(problem, x0, lo, hi, max_evals)
        at_bound = bounds_reached(names, x_best, lo, hi)
    fitted = {n: float(math.exp(v)) for n, v in zip(names, x_best, strict=True)}
    group = cases[0].group if pool is None else ("fleet", pool)
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    source = label or f"fit on {len(cases)} run(s) of {group[0]} / vLLM {group[1]} at {when}"
    calibration = replace(base, **fitted, source=source)
    figures = figures_of(evs, calibration)
    residuals = {c.run_id: log_residuals(f, c.measured) for c, f in zip(cases, figures, strict=True)}
    return FitResult(
        calibration=calibration,
        group=group,
        run_ids=[c.run_id for c in cases],
        fitted=fitted,
        fixed={k: float(v) for k, v in fixed_values.items()},
        start={n: float(math.exp(v)) for n, v in zip(names, x0, strict=True)},
        loss=f_best,
        loss_start=loss_start,
        evaluations=problem.evaluations,
        residuals=residuals,
        created_at=when,
        uncertainty=uncertainty,
        at_bound=at_bound,
        device_kind=kind,
    )


def _solve(
    problem: _Problem, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, max_evals: int
) -> tuple[np.ndarray, float, dict[str, float | None]]:
    """A 1-D search along a common slowdown (efficiencies divided, overheads multiplied), then least_squares."""
    from scipy.optimize import least_squares

    sign = np.array([-1.0 if n.endswith("efficiency") else 1.0 for n in problem.names])
    iters = max(8, min(24, max_evals // 8))  # a small budget (served bench records: ~1 s per evaluation) searches less
    s_best = _golden(lambda s: problem.loss(np.clip(x0 + sign * s, lo, hi)), -4.0, 4.0, iters)
    # least_squares needs a start strictly inside the box.
    span = np.maximum(hi - lo, 1e-9)
    x1 = np.clip(x0 + sign * s_best, lo + 1e-9 * span, hi - 1e-9 * span)
    jac = _jacobian(problem, hi)
    floor = 10 if max_evals >= 100 else 3  # small budgets (served bench records): a few trust-region steps
    sol = least_squares(
        problem.residuals, x1, jac=jac, bounds=(lo, hi), method="trf", max_nfev=max(max_evals // (len(x0) + 1), floor),
        xtol=1e-6, ftol=1e-8,
    )  # fmt: skip
    x = np.clip(sol.x, lo, hi)
    return x, problem.loss(x), _uncertainty(problem, x, jac(x))


@dataclass
class HeldOut:
    """The calibration a run is predicted with when it is scored: fitted without it (or none at all)."""

    run_id: str
    calibration: Calibration
    fold: int
    folds: int
    train_run_ids: list[str]
    fit: FitResult | None = None  # the fold's fit (parameters, uncertainty, bounds); None when scored uncalibrated
    pool: str | None = None  # the pooled ("fleet") fit's key when it alone scores the run (no other fold of its group)
    device_calibration: Calibration | None = None  # then: the per-device one it replaced (defaults), for the report


def device_kind_pool(case: Any) -> str:
    """The widest pool: every run on a device of one kind (GPU or CPU host), whatever its engine generation."""
    return f"{getattr(case.device, 'kind', 'cpu')} (all engines)"


def pool_key(case: Any) -> str:
    """The fleet a run's parameters may be pooled with: its device kind (a GPU fit never touches a CPU host) and
    vLLM engine generation (V0 and V1 differ in host work per step)."""
    kind = getattr(case.device, "kind", "cpu")
    group = case.group[1] if isinstance(case.group, tuple) else str(case.group)
    return f"{kind} {group}"


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


def layout_of(case: Any) -> str:
    """A fold label holding out whole TP/PP degrees (and DP): the planner's claims are about layouts."""
    return str(case.layout)


def degree_of(case: Any) -> str:
    """A fold label holding out whole TP/PP degrees (DP replicas of one degree run the same engine): a fit scored on
    TP=8 never saw a TP=8 record, so the all-reduce and hand-off terms are predicted, not fitted, for it."""
    s = case.scenario
    return f"TP{s.tp}·PP{s.pp}"


def source_of(case: Any) -> str:
    """A fold label holding out every record of one source: its publisher (several pages of one lab are one
    source), else its URL or citation, else the collection a measured run came from."""
    for value in (getattr(case, "publisher", None), getattr(case, "source", None)):
        if value:
            return str(value)
    return str(case.meta.get("source_url") or case.meta.get("collector_id") or "")


def cross_validate(
    cases: Sequence[RunCase],
    k: int = 5,
    max_evals: int = 400,
    fold_by: Callable[[Any], str] | None = None,
    evaluators: dict[str, Any] | None = None,
    scored: set[str] | None = None,
    params: Sequence[str] | None = None,
    pool_by: Callable[[Any], str] | Sequence[Callable[[Any], str]] | None = None,
) -> dict[str, HeldOut]:
    """For every run, a calibration fitted on the other folds of its (device, vLLM version) group.

    ``pool_by`` (e.g. ``pool_key``, or a sequence of keys, narrowest first): each fold is first fitted pooled, on
    the runs of every device of its pool outside its fold label (never its source or degree; a wider pool only
    where the narrower one has no such run), then the group's own runs outside the fold refit the device's
    efficiencies from there (``fit_on_pooled``). A run whose group had no other fold is scored by the pooled fit
    alone, its per-device calibration (defaults) kept beside it (``HeldOut.device_calibration``).

    ``fold_by`` None: k stratified folds. Otherwise one fold per label within the group (``layout_of``: every run of
    one layout held out together; ``source_of``: every record of one source), so a fit never sees the scored
    layout or source. A run with nothing else to fit on (alone in its group, or its group has one label) is scored
    uncalibrated (defaults / profile), and its source says why. ``evaluators``: prebuilt per run id (e.g. a
    served bench record's), built from each case otherwise. ``scored``: only folds holding one of these run ids
    are fitted (the others' runs train, they are not scored). ``params``: the parameters each fold's fit may move
    (default: ``candidate_params`` of its runs).
    """
    by_group: dict[tuple[str, str], list[RunCase]] = {}
    for c in cases:
        by_group.setdefault(c.group, []).append(c)
    out: dict[str, HeldOut] = {}
    pools = [] if pool_by is None else [pool_by] if callable(pool_by) else list(pool_by)
    fleet = _PooledFits(cases, fold_by, evaluators or {}, max_evals, params) if fold_by and pools else None
    for group, members in sorted(by_group.items()):
        evs = {c.run_id: (evaluators or {}).get(c.run_id) or Evaluator(c) for c in members}
        if fold_by is None:
            splits = folds_of([c.run_id for c in members], k, {c.run_id: stratum(c) for c in members})
            what = "this run held out"
        else:
            labels = sorted({fold_by(c) for c in members})
            splits = [sorted(c.run_id for c in members if fold_by(c) == lab) for lab in labels]
            kind = {layout_of: "layout", degree_of: "TP/PP degree"}.get(fold_by, "source")
            what = f"its whole fold ({kind}) held out"
        if len(members) < 2 or len(splits) < 2:
            why = "no other run of its group" if len(members) < 2 else "no other fold of its group"
            for c in members:
                out[c.run_id] = HeldOut(c.run_id, Calibration(source=f"defaults ({why} to fit)"), 0, 0, [])
            continue
        for i, held in enumerate(splits):
            if scored is not None and not scored.intersection(held):
                continue
            train = [c for c in members if c.run_id not in held]
            label = (
                f"cross-validation fold {i + 1}/{len(splits)}: fit on {len(train)} run(s) of {group[0]} / "
                f"vLLM {group[1]}, {what}"
            )
            pooled = fleet.first(pools, next(c for c in members if c.run_id == held[0])) if fleet else None
            if pooled is None:
                result = fit(train, evaluators=evs, label=label, max_evals=max_evals, params=params)
            else:
                result = fit_on_pooled(train, pooled[1], evs, label, max_evals, params)
            train_ids = sorted({*(pooled[1].run_ids if pooled else ()), *(c.run_id for c in train)})
            for run_id in held:
                out[run_id] = HeldOut(run_id, result.calibration, i + 1, len(splits), train_ids, result)
    if fleet is None:
        return out
    for c in cases:
        if scored is None or c.run_id in scored:
            out[c.run_id] = fleet.held_out(c, out[c.run_id], pools)
    return out


# What a device's own records refit on top of the pooled fit: its efficiencies, fractions of its own datasheet peaks.
# The host's and the API server's costs, the MoE and link factors stay the fleet's.
DEVICE_PARAMS = ("mem_efficiency", "compute_efficiency")


def fit_on_pooled(
    train: Sequence[RunCase],
    pooled: FitResult,
    evaluators: dict[str, Evaluator],
    label: str,
    max_evals: int,
    params: Sequence[str] | None,
) -> FitResult:
    """A device's fit in two stages: every parameter from the pooled fit on the fleet outside the fold, then the
    device's efficiencies refitted on its own records from there, pulled towards the pooled values by the prior.

    Why: a device's other sources are one or two publishers, each with one kind of workload (prefill-heavy bursts,
    or a decode-heavy sweep of one model), so a fit on them alone trades a host cost against an efficiency in
    whatever way suits that workload, and the trade does not carry to the held-out one. The host's and the API
    server's costs are vLLM's code on a CPU, not the GPU: every record of the fleet informs them. The efficiencies
    are the device's own, and its records set them. The result lists every parameter: the refitted ones with their
    own uncertainty, the others with the pooled fit's.

    A refit that pins an efficiency at a bound (100 % of the datasheet peak) is not shipped: the device's records
    want a cost the step model lacks on them, or cannot see that efficiency at all (GPUStack's four R1 runs on
    8×H200 put the H200's HBM at 100 % and its compute at 21 % of peak, and priced a Qwen3-30B-A3B decode on one
    H200 45 % fast). The fold then keeps the fleet's efficiencies, and its source says why."""
    names = [n for n in DEVICE_PARAMS if params is None or n in params]
    device = fit(train, evaluators=evaluators, start=pooled.calibration, params=names, label=label, max_evals=max_evals)
    pinned = sorted(n for n in device.at_bound if n in device.fitted)
    if pinned:
        source = (
            f"{label}: its own records pinned {', '.join(pinned)} at a bound (a cost the step model misses on them), "
            f"so the fleet's values stand: the {pooled.calibration.source}"
        )
        return replace(pooled, calibration=replace(pooled.calibration, source=source), group=device.group)
    fitted = {**pooled.fitted, **device.fitted}
    source = f"{label}: {', '.join(sorted(device.fitted)) or 'nothing'} refitted on the {pooled.calibration.source}"
    return replace(
        device,
        calibration=replace(device.calibration, source=source),
        fitted=fitted,
        fixed={n: v for n, v in {**pooled.fixed, **device.fixed}.items() if n not in fitted},
        uncertainty={**pooled.uncertainty, **device.uncertainty},
        at_bound={**{n: b for n, b in pooled.at_bound.items() if n not in device.fitted}, **device.at_bound},
    )


class _PooledFits:
    """Pooled fits, one per (pool, held-out fold label), each on every run of the pool whose label differs (so never
    a run of the held-out source or degree), fitted when first asked for."""

    def __init__(
        self,
        cases: Sequence[RunCase],
        fold_by: Callable[[Any], str],
        evaluators: dict[str, Any],
        max_evals: int,
        params: Sequence[str] | None,
    ) -> None:
        self.cases, self.fold_by, self.evaluators, self.max_evals, self.params = (
            cases, fold_by, evaluators, max_evals, params,
        )  # fmt: skip
        self.fits: dict[tuple[str, str], FitResult | None] = {}
        self.by_runs: dict[frozenset[str], FitResult] = {}  # a wider pool with the same runs: the same fit

    def get(self, pool_by: Callable[[Any], str], case: RunCase) -> tuple[str, FitResult | None]:
        key = (pool_by(case), self.fold_by(case))
        if key not in self.fits:
            train = [o for o in self.cases if pool_by(o) == key[0] and self.fold_by(o) != key[1]]
            runs = frozenset(o.run_id for o in train)
            if train and runs not in self.by_runs:
                groups = len({o.group for o in train})
                label = f"pooled fit ({key[0]}) on {len(train)} run(s) of {groups} group(s), fold {key[1]!r} held out"
                evs = {o.run_id: self.evaluators.get(o.run_id) or Evaluator(o) for o in train}
                self.by_runs[runs] = fit(
                    train, evaluators=evs, label=label, max_evals=self.max_evals, params=self.params, pool=key[0]
                )
            self.fits[key] = self.by_runs.get(runs) if train else None
        return key[0], self.fits[key]

    def first(self, pools: Sequence[Callable[[Any], str]], case: RunCase) -> tuple[str, FitResult] | None:
        """The narrowest pool's fit that has runs outside the case's fold, with that pool's key (None: none has)."""
        for pool_by in pools:
            pool, result = self.get(pool_by, case)
            if result is not None:
                return pool, result
        return None

    def held_out(self, case: RunCase, h: HeldOut, pools: Sequence[Callable[[Any], str]]) -> HeldOut:
        """A run scored uncalibrated (its device group has no other fold) takes the first pool's fit that has runs
        (narrowest first), its per-device calibration (defaults) kept beside it for the report."""
        if h.train_run_ids:
            return h
        pooled = self.first(pools, case)
        if pooled is None:
            return h
        pool, result = pooled
        return HeldOut(
            case.run_id, result.calibration, h.fold, h.folds, list(result.run_ids), result, pool=pool,
            device_calibration=h.calibration,
        )  # fmt: skip


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
