"""Prediction assembly: the replicas' trace points merged on one timeline grid, the per-request frame, and the
summary keyed like a measured run's (engine.summary)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from engine.perf import StepModel
from engine.sim import config
from engine.sim.state import BusyTotals, TracePoints
from engine.summary import TimeFractions

TIMELINE_COLUMNS = [
    "t_s",
    "running",
    "waiting",
    "kv_usage",
    "prompt_tokens_per_s",
    "generation_tokens_per_s",
    "preemptions_total",
    "hbm_bw_util",
    "compute_util",
]
REQUEST_COLUMNS = [
    "request_id",
    "isl",
    "osl",
    "arrival_s",
    "first_scheduled_s",
    "first_token_s",
    "finished_s",
    "num_preemptions",
    "queue_s",
    "ttft_s",
    "tpot_s",
    "e2e_s",
]


def _percentile(x: np.ndarray, q: float) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if len(x) else None


def _mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None


def bound_regime(preemptions: int, totals: BusyTotals) -> str:
    if preemptions > 0:
        return "capacity-bound"
    busy = max(totals.busy_s, 1e-12)
    if totals.comm_s / busy > 0.25:
        return "communication-bound"
    if totals.compute_s > totals.memory_s:
        return "compute-bound"
    return "bandwidth-bound"


def peak(traces: list[TracePoints], field_name: str, series: pl.Series) -> Any:
    """A peak from the raw trace points of a single replica (the grid can fall between them), else the grid's."""
    if len(traces) == 1:
        return getattr(traces[0], field_name).max().item()
    return series.max() if len(series) else 0


def latency_figures(req: pl.DataFrame) -> dict[str, float | None]:
    """Mean, median and p99 of TTFT, TPOT and end-to-end latency, and the mean queue time."""
    out: dict[str, float | None] = {}
    for metric in ("ttft", "tpot", "e2e"):
        col = req[f"{metric}_s"].to_numpy()
        out[f"{metric}_mean_s"] = _mean(col)
        out[f"{metric}_p50_s"] = _percentile(col, 50)
        out[f"{metric}_p99_s"] = _percentile(col, 99)
    out["queue_mean_s"] = _mean(req["queue_s"].to_numpy())
    return out


def time_fractions(totals: BusyTotals) -> TimeFractions:
    """Shares of the busy time."""
    busy = max(totals.busy_s, 1e-12)
    return TimeFractions(
        compute=totals.compute_s / busy,
        memory=totals.memory_s / busy,
        communication=totals.comm_s / busy,
        overhead=totals.overhead_s / busy,
    )


def request_frame(
    isl: np.ndarray,
    osl: np.ndarray,
    arrival: np.ndarray,
    first_scheduled: np.ndarray,
    first_token: np.ndarray,
    finished: np.ndarray,
    num_preemptions: np.ndarray,
) -> pl.DataFrame:
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(osl > 1, (finished - first_token) / np.maximum(osl - 1, 1), 0.0)
    return pl.DataFrame(
        {
            "request_id": np.arange(len(isl), dtype=np.int64),
            "isl": isl,
            "osl": osl,
            "arrival_s": arrival,
            "first_scheduled_s": first_scheduled,
            "first_token_s": first_token,
            "finished_s": finished,
            "num_preemptions": num_preemptions,
            "queue_s": first_scheduled - arrival,
            "ttft_s": first_token - arrival,
            "tpot_s": tpot,
            "e2e_s": finished - arrival,
        }
    )


def first_preemption(traces: list[TracePoints]) -> float | None:
    """The cliff's onset: the earliest trace point with a preemption, over the replicas."""
    first: float | None = None
    for tr in traces:
        hit = np.flatnonzero(np.asarray(tr.preempt_total) > 0)
        if len(hit):
            ts = float(tr.t[hit[0]])
            first = ts if first is None else min(first, ts)
    return first


def merge_timeline(traces: list[TracePoints], pool_total: int, sm: StepModel) -> pl.DataFrame:
    """Sum replicas on a common grid of ≤ TIMELINE_ROWS points; rates from cumulative counters per bin."""
    end = max(float(tr.t[-1]) for tr in traces)
    rows = min(config.TIMELINE_ROWS, max(300, sum(len(tr.t) for tr in traces)))
    grid = np.linspace(0.0, end, rows)
    running = np.zeros(rows)
    waiting = np.zeros(rows)
    used = np.zeros(rows)
    cum = {k: np.zeros(rows) for k in ("prompt", "gen", "preempt", "bytes", "flops")}
    for tr in traces:
        tt = np.asarray(tr.t)
        # State holds from one record to the next: take the latest record at or before each grid point.
        pos = np.clip(np.searchsorted(tt, grid, side="right") - 1, 0, len(tt) - 1)
        running += np.asarray(tr.running)[pos]
        waiting += np.asarray(tr.waiting)[pos]
        used += np.interp(grid, tt, np.asarray(tr.used_blocks, dtype=float))  # KV grows steadily between points
        for key, series in (
            ("prompt", tr.prompt_total),
            ("gen", tr.gen_total),
            ("bytes", tr.bytes_total),
            ("flops", tr.flops_total),
        ):
            cum[key] += np.interp(grid, tt, np.asarray(series, dtype=float))
        cum["preempt"] += np.asarray(tr.preempt_total, dtype=float)[pos]
    dt = np.diff(grid, prepend=grid[0])
    dt[0] = dt[1] if rows > 1 else 1.0
    replicas = max(len(traces), 1)  # bytes and FLOPs are per device; average over replicas

    def rate(c: np.ndarray) -> np.ndarray:
        d = np.diff(c, prepend=c[0])
        return np.where(dt > 0, d / np.where(dt > 0, dt, 1), 0.0)

    return pl.DataFrame(
        {
            "t_s": grid,
            "running": running.astype(np.int64),
            "waiting": waiting.astype(np.int64),
            "kv_usage": used / max(pool_total, 1),
            "prompt_tokens_per_s": rate(cum["prompt"]),
            "generation_tokens_per_s": rate(cum["gen"]),
            "preemptions_total": cum["preempt"].astype(np.int64),
            "hbm_bw_util": np.clip(rate(cum["bytes"]) / replicas / sm.gpu.hbm_bytes_per_s, 0, 1),
            "compute_util": np.clip(rate(cum["flops"]) / replicas / sm.peak_flops, 0, 1),
        }
    )
