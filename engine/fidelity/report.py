"""The validation report: every measured run against its held-out prediction, figure by figure and series by series.

Errors are signed relative errors ``(predicted - measured) / measured`` per run; the summary takes absolute values
(medians for cliff onset and completion, means — MAPE — for the latency figures) over held-out runs only, i.e. runs
scored with a calibration fitted without them (or with no calibration at all when nothing else was measured on
their hardware). Timelines are compared after putting both on one time grid from the batch's submission:

- ``kv_usage``: mean absolute difference of the KV pool in use (fraction points, 0..1);
- ``running``: mean absolute difference of running requests over the measured peak;
- ``generation_tokens_per_s``: mean absolute difference of the generation rate over the measured mean rate.

The ``*_shape`` variants put each series on its own time axis scaled to 0..1, which separates "the right curve at
the wrong speed" from "the wrong curve".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from engine.fidelity.calibrate import HeldOut, cross_validate, layout_of
from engine.fidelity.runs import RunCase, load_cases
from engine.perf import Calibration
from engine.simulate import Prediction, predict
from engine.summary import SUMMARY_KEYS

# Summary keys that are not compared: an input (the request count), equal by construction (tokens generated), or a
# category (the regime, reported on its own).
NOT_COMPARED = ("num_requests", "generated_tokens", "bound_regime")
# Every figure of the shared summary contract, plus the first engine step's duration (from the requests, both sides).
FIGURES = (*(k for k in SUMMARY_KEYS if k not in NOT_COMPARED), "first_step_s")
SLOW_FIRST_STEP_SHARE = 0.1  # a first step longer than predicted by this share of the run's completion gets a note
SERIES = ("kv_usage", "running", "generation_tokens_per_s")
# How each series' error is named wherever it is shown (report, Fidelity page, Explore and Runs overlays): the
# series, and what the mean absolute difference is a fraction of.
SERIES_ERROR_NAMES: dict[str, tuple[str, str]] = {
    "kv_usage": ("KV usage", "of the KV pool"),
    "running": ("running requests", "of the measured peak"),
    "generation_tokens_per_s": ("generation throughput", "of the measured mean rate"),
}
GRID_POINTS = 240
OVER_SATURATION_RATIO = 2.0  # concurrent KV demand over the pool at which a run counts as over-saturated
TARGETS: dict[str, tuple[float, str]] = {  # summary key: (limit, what it means)
    "kv_capacity_err_max": (0.03, "KV capacity within 3 % of vLLM's count"),
    "cliff_onset_err_median": (0.15, "cliff onset within 15 % (median)"),
    "completion_err_median": (0.15, "completion time within 15 % (median)"),
    "ttft_mape": (0.20, "mean TTFT MAPE <= 20 %"),
    "tpot_mape": (0.20, "mean TPOT MAPE <= 20 %"),
    "e2e_mape": (0.20, "mean E2E MAPE <= 20 %"),
}


def rel_err(predicted: Any, measured: Any) -> float | None:
    """(predicted - measured) / measured; None when either side is missing or the measured value is 0."""
    if predicted is None or measured is None:
        return None
    p, m = float(predicted), float(measured)
    if not (math.isfinite(p) and math.isfinite(m)) or m == 0:
        return None
    return (p - m) / abs(m)


# ------------------------------------------------------------------------------------------------------- timelines


def _hold(t: np.ndarray, v: np.ndarray, grid: np.ndarray, end: float, after: float = 0.0) -> np.ndarray:
    """Value of a sampled gauge at each grid time: the latest sample at or before it; ``after`` past the end."""
    if len(t) == 0:
        return np.full(len(grid), after)
    pos = np.clip(np.searchsorted(t, grid, side="right") - 1, 0, len(t) - 1)
    out = v[pos].astype(float)
    out[grid > end] = after
    return out


def _rate(t: np.ndarray, cumulative: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A counter's rate per grid bin: increase of the linearly interpolated counter over the bin's width."""
    if len(t) < 2:
        return np.zeros(len(grid))
    c = np.interp(grid, t, cumulative, left=cumulative[0], right=cumulative[-1])
    width = np.diff(grid, prepend=grid[0] - (grid[1] - grid[0]))
    rate = np.diff(c, prepend=c[0]) / np.where(width > 0, width, 1.0)
    rate[0] = rate[1] if len(rate) > 1 else 0.0
    return rate


def measured_series(samples: pl.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """(t_s, values, kind) per series from a run's raw engine samples (kind: gauge | counter)."""
    s = samples.sort("t_s")
    t = s["t_s"].to_numpy().astype(float)
    return {
        "kv_usage": (t, s["kv_usage"].fill_null(0).to_numpy(), "gauge"),
        "running": (t, s["running"].fill_null(0).to_numpy(), "gauge"),
        "generation_tokens_per_s": (t, s["generation_tokens_total"].fill_null(0).to_numpy().astype(float), "counter"),
    }


def predicted_series(timeline: pl.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """The same from a predicted timeline (rates there are per bin; they are integrated back into a counter)."""
    t = timeline["t_s"].to_numpy().astype(float)
    rate = timeline["generation_tokens_per_s"].to_numpy().astype(float)
    cumulative = np.concatenate([[0.0], np.cumsum(rate[1:] * np.diff(t))]) if len(t) else np.zeros(0)
    return {
        "kv_usage": (t, timeline["kv_usage"].to_numpy(), "gauge"),
        "running": (t, timeline["running"].to_numpy(), "gauge"),
        "generation_tokens_per_s": (t, cumulative, "counter"),
    }


def _on_grid(series: tuple[np.ndarray, np.ndarray, str], grid: np.ndarray) -> np.ndarray:
    t, v, kind = series
    end = float(t[-1]) if len(t) else 0.0
    if kind == "gauge":
        return _hold(t, v, grid, end)
    rate = _rate(t, v, grid)
    rate[grid > end] = 0.0
    return rate


def aligned(
    measured: dict[str, tuple[np.ndarray, np.ndarray, str]],
    predicted: dict[str, tuple[np.ndarray, np.ndarray, str]],
    points: int = GRID_POINTS,
    normalised: bool = False,
) -> pl.DataFrame:
    """Both sides of every series on one grid (long form: series, t, measured, predicted).

    ``normalised``: each side on its own time axis scaled to 0..1 (t is then a fraction of each run's length).
    """
    frames = []
    for name in SERIES:
        m, p = measured[name], predicted[name]
        if normalised:
            m_end = max(float(m[0][-1]) if len(m[0]) else 0.0, 1e-12)
            p_end = max(float(p[0][-1]) if len(p[0]) else 0.0, 1e-12)
            grid = np.linspace(0.0, 1.0, points)
            mv = _on_grid((m[0] / m_end, m[1], m[2]), grid)
            pv = _on_grid((p[0] / p_end, p[1], p[2]), grid)
            if m[2] == "counter":  # per unit of normalised time -> per second of each run's own clock
                mv, pv = mv / m_end, pv / p_end
        else:
            end = max(float(m[0][-1]) if len(m[0]) else 0.0, float(p[0][-1]) if len(p[0]) else 0.0, 1e-12)
            grid = np.linspace(0.0, end, points)
            mv, pv = _on_grid(m, grid), _on_grid(p, grid)
        frames.append(pl.DataFrame({"series": [name] * points, "t": grid, "measured": mv, "predicted": pv}))
    return pl.concat(frames)


def series_error_text(name: str, value: float | None, *, shape: bool = False) -> str:
    """One series error as every view words it, e.g. "KV usage error 3.2 % of the KV pool"."""
    series, of = SERIES_ERROR_NAMES[name]
    kind = "shape error" if shape else "error"
    return f"{series} {kind} —" if value is None else f"{series} {kind} {value * 100:.1f} % {of}"


def series_errors(
    measured_samples: pl.DataFrame, predicted_timeline: pl.DataFrame, points: int = GRID_POINTS
) -> dict[str, dict[str, float | None]]:
    """Per-series errors of one run's prediction (see the module docstring): ``err`` on one time grid and
    ``shape_err`` on each run's own normalised time axis, as fractions. The report and the overlays both call this.
    """
    m, p = measured_series(measured_samples), predicted_series(predicted_timeline)
    out: dict[str, dict[str, float | None]] = {}
    for key, frame in (("time", aligned(m, p, points)), ("shape", aligned(m, p, points, normalised=True))):
        for name in SERIES:
            f = frame.filter(pl.col("series") == name)
            mv, pv = f["measured"].to_numpy(), f["predicted"].to_numpy()
            mae = float(np.mean(np.abs(pv - mv))) if len(mv) else None
            if name == "kv_usage":
                scale = 1.0
            elif name == "running":
                scale = max(float(np.max(m["running"][1])) if len(m["running"][1]) else 0.0, 1.0)
            else:
                t, c, _ = m[name]
                span = float(t[-1] - t[0]) if len(t) > 1 else 0.0
                scale = float(c[-1] - c[0]) / span if span > 0 else 0.0
            value = None if mae is None or scale <= 0 else mae / scale
            out.setdefault(name, {})["err" if key == "time" else "shape_err"] = value
    return out


# -------------------------------------------------------------------------------------------------- repeatability


def decode_step_times(samples: pl.DataFrame, min_steps: int = 10) -> dict[int, float]:
    """Median duration of pure decode steps by batch size, from per-step samples: steps in which every running
    request produced one token and no prompt token was counted. Empty for runs not sampled every step."""
    if samples.height < 3:
        return {}
    s = samples.sort("t_s")
    dt = np.diff(s["t_s"].to_numpy().astype(float))
    gen = np.diff(s["generation_tokens_total"].fill_null(0).to_numpy())
    prompt = np.diff(s["prompt_tokens_total"].fill_null(0).to_numpy())
    running = s["running"].fill_null(0).to_numpy()[1:]
    pure = (prompt == 0) & (gen > 0) & (gen == running) & (dt > 0)
    out = {}
    for batch in np.unique(gen[pure]):
        mask = pure & (gen == batch)
        if mask.sum() >= min_steps:
            out[int(batch)] = float(np.median(dt[mask]))
    return out


def speed_indices(cases: Sequence[RunCase]) -> dict[str, float]:
    """How slow each run's decode steps were against the other runs of its group at the same batch size
    (median ratio; 1.2 = 20 % slower). The engine sees the same step in both runs, so this spread is host noise
    (other work on a shared machine) that no prediction can follow: it bounds the achievable error."""
    times = {c.run_id: decode_step_times(c.samples) if c.meta.get("sample_interval_s") is None else {} for c in cases}
    out: dict[str, float] = {}
    for case in cases:
        peers = [
            c for c in cases if c.group == case.group and c.run_id != case.run_id and _layers_of(c) == _layers_of(case)
        ]
        ratios = []
        for batch, mine in times[case.run_id].items():
            others = [times[p.run_id][batch] for p in peers if batch in times[p.run_id]]
            if others:
                ratios.append(mine / float(np.median(others)))
        if ratios:
            out[case.run_id] = float(np.median(ratios))
    return out


def _layers_of(case: RunCase) -> int:
    config = case.meta.get("model_config") or {}
    return int(config.get("num_hidden_layers") or 0)


# ------------------------------------------------------------------------------------------------------------ runs


def demand_ratio(case: RunCase, kv_capacity_tokens: int | None) -> float | None:
    """KV tokens the first wave of concurrent requests will need at full length, over the pool (per replica)."""
    if not kv_capacity_tokens:
        return None
    s = case.scenario
    per_replica = math.ceil(len(case.lengths) / s.dp)
    concurrent = min(per_replica, s.max_num_seqs)
    need = float(np.mean(case.lengths.sum(axis=1))) * concurrent
    return need / kv_capacity_tokens


def predict_case(case: RunCase, calibration: Calibration) -> Prediction:
    """A measured run predicted as the report scores it: its scenario, its own request list, each request arriving
    when the scheduler first saw it, prefix caching as the run had it. The dashboard's overlays use this too."""
    return predict(
        case.scenario, case.lengths, calibration, prefix_caching=case.prefix_caching, arrivals_s=case.arrivals_s
    )


def run_series_errors(case: RunCase, prediction: Prediction) -> dict[str, dict[str, float | None]]:
    """The per-series errors of a run's prediction against the run's every engine sample ({} without samples)."""
    return series_errors(case.samples, prediction.timeline) if case.samples.height else {}


def first_step_s(requests: pl.DataFrame) -> float | None:
    """How long the engine's first step took: from the first scheduling to the first token of a request it scheduled.

    vLLM's first forward pass pays one-off costs (allocations, warm-up; on the bundled TP=2 CPU run 2.3 s) that the
    step model has no term for; every request of the first wave waits for it.
    """
    if not {"first_scheduled_s", "first_token_s"} <= set(requests.columns):
        return None
    done = requests.drop_nulls(["first_scheduled_s", "first_token_s"])
    if done.height == 0:
        return None
    first = done.sort("first_scheduled_s", "first_token_s").row(0, named=True)
    return float(first["first_token_s"] - first["first_scheduled_s"])


def compare_run(case: RunCase, prediction: Prediction, held: HeldOut) -> dict[str, Any]:
    """One run of the report: figures predicted vs measured, series errors, regime, saturation, notes."""
    pred = {**prediction.summary.as_dict(), "first_step_s": first_step_s(prediction.requests)}
    meas = {**case.measured, "first_step_s": first_step_s(case.requests)}
    figures: dict[str, dict[str, Any]] = {}
    for name in FIGURES:
        p, m = pred.get(name), meas.get(name)
        figures[name] = {"predicted": p, "measured": m, "err": rel_err(p, m)}
    measured_preempts = meas.get("preemptions") or 0
    predicted_regime = str(pred.get("bound_regime"))
    regime = (
        "capacity-bound"
        if measured_preempts > 0
        else (predicted_regime if predicted_regime != "capacity-bound" else "bandwidth-bound")
    )
    ratio = demand_ratio(case, meas.get("kv_capacity_tokens") or pred.get("kv_capacity_tokens"))
    n = len(case.lengths)
    over = bool((ratio is not None and ratio >= OVER_SATURATION_RATIO) or measured_preempts >= n)
    notes = []
    cliff_p, cliff_m = pred.get("cliff_onset_s"), meas.get("cliff_onset_s")
    if (cliff_p is None) != (cliff_m is None):
        side = "predicted a cliff the run did not have" if cliff_p is not None else "missed the run's cliff"
        notes.append(f"cliff presence differs: the engine {side}")
    step_p, step_m, completion_m = pred.get("first_step_s"), meas.get("first_step_s"), meas.get("completion_s")
    if (
        step_p is not None
        and step_m is not None
        and completion_m
        and step_m - step_p > SLOW_FIRST_STEP_SHARE * completion_m
    ):
        notes.append(
            f"slow first step: the engine's first step took {step_m:.2f} s here against {step_p:.3f} s predicted, "
            f"{(step_m - step_p) / completion_m:.0%} of the run's completion time — a one-off start-up cost the step "
            "model has no term for, which every request of the first wave waits for"
        )
    if meas.get("kv_capacity_tokens") is None:
        notes.append("vLLM's KV capacity was not recorded with this run")
    if over:
        notes.append(
            "over-saturated: which request is evicted next depends on step-level timing, so preemption counts and "
            "tail latencies are fragile on both sides"
        )
    s = case.scenario
    return {
        "run_id": case.run_id,
        "name": case.name,
        "device_key": case.device_key,
        "vllm_version": case.vllm_version,
        "model": pred.get("model"),
        "layout": case.layout,
        "num_requests": n,
        "max_num_seqs": s.max_num_seqs,
        "kv_cache_memory_bytes": s.kv_cache_memory_bytes,
        "workload": s.workload,
        "device_source": case.device.source,
        "calibration": held.calibration.source,
        "calibrated": held.folds > 0,
        "fold": held.fold,
        "folds": held.folds,
        "train_runs": len(held.train_run_ids),
        "regime": regime,
        "predicted_regime": predicted_regime,
        "demand_ratio": ratio,
        "over_saturated": over,
        "figures": figures,
        "series": run_series_errors(case, prediction),
        "notes": notes,
    }


# --------------------------------------------------------------------------------------------------------- summary


def _abs(rows: Sequence[dict[str, Any]], figure: str) -> list[float]:
    return [abs(r["figures"][figure]["err"]) for r in rows if r["figures"][figure]["err"] is not None]


def _cliff_mismatch(row: dict[str, Any]) -> bool:
    cliff = row["figures"]["cliff_onset_s"]
    return (cliff["predicted"] is None) != (cliff["measured"] is None)


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def figure_stats(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary's error statistics over a set of run rows."""
    stats: dict[str, Any] = {
        "runs": len(rows),
        "kv_capacity_err_max": max(_abs(rows, "kv_capacity_tokens"), default=None),
        "cliff_onset_err_median": _median(_abs(rows, "cliff_onset_s")),
        "cliff_onset_abs_err_median_s": _median(
            [
                abs(r["figures"]["cliff_onset_s"]["predicted"] - r["figures"]["cliff_onset_s"]["measured"])
                for r in rows
                if r["figures"]["cliff_onset_s"]["err"] is not None
            ]
        ),  # early cliffs: a few steps
        "completion_err_median": _median(_abs(rows, "completion_s")),
        "ttft_mape": _mean(_abs(rows, "ttft_mean_s")),
        "tpot_mape": _mean(_abs(rows, "tpot_mean_s")),
        "e2e_mape": _mean(_abs(rows, "e2e_mean_s")),
        "ttft_p99_mape": _mean(_abs(rows, "ttft_p99_s")),
        "e2e_p99_mape": _mean(_abs(rows, "e2e_p99_s")),
        "queue_mape": _mean(_abs(rows, "queue_mean_s")),
        # Runs whose requests barely queued (a step or two) make relative queue errors huge: the absolute one too.
        "queue_abs_err_median_s": _median(
            [
                abs(q["predicted"] - q["measured"])
                for q in (r["figures"]["queue_mean_s"] for r in rows)
                if q["predicted"] is not None and q["measured"] is not None
            ]
        ),
        "first_step_err_median": _median(_abs(rows, "first_step_s")),
        "peak_running_mape": _mean(_abs(rows, "peak_running")),
        "preemptions_mape": _mean(_abs(rows, "preemptions")),
        "cliff_presence_mismatches": sum(1 for r in rows if _cliff_mismatch(r)),
    }
    for name in SERIES:
        values = [r["series"][name]["err"] for r in rows if r["series"] and r["series"][name]["err"] is not None]
        stats[f"{name}_timeline_err_median"] = _median(values)
    return stats


def summarize(rows: Sequence[dict[str, Any]], skipped: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """Headline figures over held-out runs, targets met or missed (and where), and breakdowns."""
    summary: dict[str, Any] = {"held_out_runs": len(rows)}
    stats = figure_stats(rows)
    summary.update({k: v for k, v in stats.items() if k != "runs"})
    summary["calibrated_runs"] = sum(1 for r in rows if r["calibrated"])
    summary["uncalibrated_runs"] = sum(1 for r in rows if not r["calibrated"])
    summary["skipped_runs"] = len(skipped)
    summary["over_saturated_runs"] = [r["run_id"] for r in rows if r["over_saturated"]]
    speeds = [r["step_speed_index"] for r in rows if r.get("step_speed_index") is not None]
    # Diagnostic, not a target: the time errors had each run's host run at its group's typical speed.
    adjusted = [r for r in rows if r.get("step_speed_index") is not None]
    for key, figure, how in (
        ("completion_err_median", "completion_s", _median),
        ("ttft_mape", "ttft_mean_s", _mean),
        ("tpot_mape", "tpot_mean_s", _mean),
        ("e2e_mape", "e2e_mean_s", _mean),
    ):
        errs = []
        for r in adjusted:
            f = r["figures"][figure]
            if f["predicted"] is not None and f["measured"]:
                errs.append(abs(f["predicted"] * r["step_speed_index"] - f["measured"]) / f["measured"])
        summary[f"{key}_host_speed_adjusted"] = how(errs)
    # Median |index - 1|: how much the same decode step's time varies between runs of one group (host noise).
    summary["step_time_spread"] = _median([abs(v - 1.0) for v in speeds])
    summary["by_regime"] = _grouped(rows, "regime")
    summary["by_vllm_version"] = _grouped(rows, "vllm_version")
    summary["by_device"] = _grouped(rows, "device_key")
    targets = {}
    for key, (limit, text) in TARGETS.items():
        value = summary.get(key)
        targets[key] = {
            "limit": limit,
            "value": value,
            "met": None if value is None else value <= limit,
            "meaning": text,
        }
    summary["targets"] = targets
    summary["misses"] = _misses(rows, targets)
    if summary["misses"] and summary["step_time_spread"] is not None:
        summary["misses"].append(
            f"noise floor: the same decode step (same batch size, same model) took a median "
            f"{summary['step_time_spread']:.0%} longer or shorter in one run than in the other runs of its group; "
            "the engine prices both alike, so timing errors of about that size are host noise, not model error"
        )
    summary["worst_runs"] = [r["run_id"] for r in worst_runs(rows, 5)]
    return summary


def _grouped(rows: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r[key]), []).append(r)
    return {name: figure_stats(members) for name, members in sorted(groups.items())}


def run_score(row: dict[str, Any]) -> float:
    """How far off a run is: the largest absolute error among completion, mean TTFT/TPOT/E2E and cliff onset."""
    errs = [
        row["figures"][f]["err"] for f in ("completion_s", "ttft_mean_s", "tpot_mean_s", "e2e_mean_s", "cliff_onset_s")
    ]
    values = [abs(e) for e in errs if e is not None]
    if _cliff_mismatch(row):
        values.append(1.0)
    return max(values, default=0.0)


def worst_runs(rows: Sequence[dict[str, Any]], n: int = 5) -> list[dict[str, Any]]:
    return sorted(rows, key=run_score, reverse=True)[:n]


def _misses(rows: Sequence[dict[str, Any]], targets: dict[str, dict[str, Any]]) -> list[str]:
    """A sentence per missed target naming the runs and regimes that miss it."""
    figure_of = {
        "kv_capacity_err_max": "kv_capacity_tokens",
        "cliff_onset_err_median": "cliff_onset_s",
        "completion_err_median": "completion_s",
        "ttft_mape": "ttft_mean_s",
        "tpot_mape": "tpot_mean_s",
        "e2e_mape": "e2e_mean_s",
    }
    out = []
    for key, target in targets.items():
        if target["met"] is not False:
            continue
        figure = figure_of[key]
        bad = [
            r
            for r in rows
            if r["figures"][figure]["err"] is not None and abs(r["figures"][figure]["err"]) > target["limit"]
        ]
        by_regime: dict[str, int] = {}
        for r in bad:
            by_regime[r["regime"]] = by_regime.get(r["regime"], 0) + 1
        signs = [r["figures"][figure]["err"] for r in bad]
        direction = "over-predicts" if signs and np.median(signs) > 0 else "under-predicts"
        over = sum(1 for r in bad if r["over_saturated"])
        worst = sorted(bad, key=lambda r: -abs(r["figures"][figure]["err"]))[:3]
        out.append(
            f"{target['meaning']}: missed ({target['value']:.1%}); {len(bad)} of {len(rows)} runs outside the limit, "
            f"by regime {by_regime}, {over} over-saturated; the engine mostly {direction}; worst: "
            + ", ".join(f"{r['run_id']} ({r['figures'][figure]['err']:+.0%})" for r in worst)
        )
    return out


# ---------------------------------------------------------------------------------------------------------- entry


def measured_run_ids(store: Any) -> list[str]:
    """Every run of the store but the published ones (those carry figures, not requests: scored on their own)."""
    runs = store.runs()
    ids = [str(r) for r in runs["run_id"].to_list()] if runs.height else []
    published = store.published_runs() if hasattr(store, "published_runs") else None
    skip = set(published["run_id"].to_list()) if published is not None and published.height else set()
    return [r for r in ids if r not in skip]


MMW_FIGURES = ("completion_s", "ttft_mean_s", "tpot_mean_s", "e2e_mean_s", "generation_tokens_per_s", "cliff_onset_s")


def median_mean_worst(errors: Sequence[float | None]) -> dict[str, Any]:
    """|error| statistics of held-out figures: median, mean, worst (largest |error|, sign kept) and how many."""
    values = [float(e) for e in errors if e is not None and math.isfinite(float(e))]
    if not values:
        return {"n": 0, "median": None, "mean": None, "worst": None}
    absolute = np.abs(values)
    return {
        "n": len(values),
        "median": float(np.median(absolute)),
        "mean": float(np.mean(absolute)),
        "worst": values[int(np.argmax(absolute))],
    }


def mmw_table(rows: Sequence[dict[str, Any]], figures: Sequence[str] = MMW_FIGURES) -> dict[str, Any]:
    """median_mean_worst of each figure's relative error over report rows."""
    return {f: median_mean_worst([r["figures"][f]["err"] for r in rows]) for f in figures}


def layout_held_out(cases: Sequence[RunCase], max_evals: int) -> dict[str, Any]:
    """Every run scored with a fit of its host that saw no run of its layout (issue #11: whole DP/TP/PP degrees
    held out); median, mean and worst per figure, overall and per held-out layout."""
    held = cross_validate(cases, max_evals=max_evals, fold_by=layout_of)
    rows = []
    for case in cases:
        h = held[case.run_id]
        if h.folds == 0:
            continue  # nothing of its host outside its layout: not scorable this way
        try:
            prediction = predict_case(case, h.calibration)
        except ValueError:
            continue
        row = compare_run(case, prediction, h)
        rows.append({k: row[k] for k in ("run_id", "layout", "device_key", "figures", "calibration", "train_runs")})
    layouts = sorted({r["layout"] for r in rows})
    return {
        "runs": len(rows),
        "unscored": sorted(c.run_id for c in cases if held[c.run_id].folds == 0),
        "overall": mmw_table(rows),
        "by_layout": {lay: mmw_table([r for r in rows if r["layout"] == lay]) for lay in layouts},
        "rows": [
            {"run_id": r["run_id"], "layout": r["layout"], "train_runs": r["train_runs"],
             **{f: r["figures"][f]["err"] for f in MMW_FIGURES}}
            for r in rows
        ],
    }  # fmt: skip


def validate(
    store: Any,
    run_ids: list[str] | None = None,
    folds: int = 5,
    max_evals: int = 400,
    layout_folds: bool = True,
) -> dict[str, Any]:
    """The whole report: cross-validated calibrations, then every run scored with the one fitted without it;
    ``layout_folds`` adds the same with whole layouts held out (``summary["held_out_layouts"]``)."""
    if run_ids is None:
        run_ids = measured_run_ids(store)
    cases, skipped = load_cases(store, run_ids)
    held = cross_validate(cases, k=folds, max_evals=max_evals)
    rows = []
    for case in cases:
        h = held[case.run_id]
        try:
            prediction = predict_case(case, h.calibration)
        except ValueError as exc:
            skipped.append({"run_id": case.run_id, "reason": f"the engine cannot predict it: {exc}"})
            continue
        rows.append(compare_run(case, prediction, h))
    speeds = speed_indices(cases)
    for row in rows:
        row["step_speed_index"] = speeds.get(row["run_id"])
    summary = summarize(rows, skipped)
    summary["held_out_runs_mmw"] = mmw_table(rows)
    if layout_folds:
        summary["held_out_layouts"] = layout_held_out(cases, max_evals)
    return {"runs": rows, "summary": summary, "skipped": skipped}
