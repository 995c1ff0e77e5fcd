"""The timeline panels shared by Explore and Runs: predicted and measured on the same axes, each measured series
with the fidelity report's error against the run's own prediction (pages.ui.compare)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import polars as pl

from pages.ui.charts import Role, Series, TimelineRow, stacked_timeline_figure
from pages.ui.compare import error_note


@dataclass(frozen=True)
class Source:
    """One timeline to draw: predicted (by the engine for a scenario) or measured (a stored run)."""

    role: Role
    label: str  # says where it came from: "engine, this scenario" or "run <id>"
    frame: pl.DataFrame  # wide (t_s + one column per series) or long (series, t_s, value) as the store gives it
    cliff_onset_s: float | None
    index: int = 0  # shade within the role: one per compared run, kept on every row
    # for a measured source beside its own prediction: the report's errors, series -> {"err": .., "shape_err": ..}
    errors: Mapping[str, Mapping[str, float | None]] | None = None


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    y_title: str
    columns: tuple[str, ...]
    fraction: bool = False
    step: bool = False


PANELS: tuple[Panel, ...] = (
    Panel("kv_usage", "KV cache usage", "KV in use (% of pool)", ("kv_usage",), fraction=True),
    Panel("running_waiting", "Running and waiting requests", "requests (count)", ("running", "waiting"), step=True),
    Panel("generation", "Generation throughput", "output (tokens/s)", ("generation_tokens_per_s",)),
    Panel("preemptions", "Cumulative preemptions", "preemptions (count)", ("preemptions_total",), step=True),
    Panel("hbm", "HBM bandwidth utilisation", "memory bandwidth (% of peak)", ("hbm_bw_util",), fraction=True),
)
PANEL = {p.key: p for p in PANELS}


def _values(frame: pl.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(t_s, values) of one series from a wide frame (predictions) or a long one (the store: series, t_s, value)."""
    if frame.height == 0:
        return None
    if "series" in frame.columns and "value" in frame.columns:
        sub = frame.filter(pl.col("series") == column).select("t_s", pl.col("value").alias(column))
        sub = sub.drop_nulls().sort("t_s")
    elif column in frame.columns:
        sub = frame.select("t_s", column).drop_nulls()
    else:
        return None
    if sub.height == 0:
        return None
    return sub["t_s"].to_numpy(), sub[column].to_numpy().astype(float)


MAX_POINTS_PER_SERIES = 600


def thin(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS_PER_SERIES) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points for drawing: each of max_points/2 equal buckets keeps its minimum and maximum,
    so peaks, the KV ceiling and the cliff survive while the browser draws a fraction of the points. Errors come
    from the run's every engine sample (pages.ui.compare), not from what is drawn. Whole-array work: it runs for
    every series on every rerun."""
    n = len(x)
    if n <= max_points:
        return x, y
    width = -(-n // (max_points // 2))  # bucket width, rounded up
    rows = -(-n // width)
    values = np.nan_to_num(np.asarray(y, dtype=float), nan=0.0)
    low = np.full(rows * width, np.inf)
    high = np.full(rows * width, -np.inf)
    low[:n] = values
    high[:n] = values
    starts = np.arange(rows) * width
    keep = np.union1d(
        starts + low.reshape(rows, width).argmin(axis=1), starts + high.reshape(rows, width).argmax(axis=1)
    )
    return x[keep], y[keep]


def panel_series(panel: Panel, sources: Sequence[Source]) -> list[Series]:
    """The lines of one panel over every source that has its columns (thinned for drawing), each named with its
    role and source, and a measured series with the report's error against its own prediction."""
    series: list[Series] = []
    for source in sources:
        for c_index, column in enumerate(panel.columns):
            got = _values(source.frame, column)
            if got is None:
                continue
            x, y = got
            note = column.replace("_", " ") if len(panel.columns) > 1 else ""
            err = error_note(source.errors, column) if source.role == "measured" else None
            if err:
                note = f"{note} · {err}" if note else err
            x, y = thin(x, y)
            # One shade per source on every row (a run is recognised by it); its second column (waiting beside
            # running) is told apart by dash, not by another shade, which another compared run would be drawn in.
            series.append(Series(source.role, source.label, x, y, index=source.index, variant=c_index, note=note))
    return series


def cliff_onsets(sources: Sequence[Source], *, name_sources: bool = True) -> list[tuple[str, float]]:
    """(label, t_s) of every source's cliff onset, for the vertical lines; ``name_sources=False`` leaves the source
    out of the label where the figure's legend and caption already name it and the panels are narrow."""
    return [
        (f"{s.role} cliff onset {_onset_text(s.cliff_onset_s)}" + (f" · {s.label}" if name_sources else ""),
         s.cliff_onset_s)
        for s in sources
        if s.cliff_onset_s is not None and np.isfinite(s.cliff_onset_s)
    ]  # fmt: skip


def _onset_text(t_s: float) -> str:
    """An onset time readable at any scale: 72 ms, 25.3 s, 1,377.0 s."""
    return f"{t_s * 1000:,.0f} ms" if t_s < 1 else f"{t_s:,.1f} s"


def timelines_figure(
    sources: Sequence[Source],
    *,
    title: str,
    panels: Sequence[Panel] = PANELS,
    columns: int = 1,
    name_sources_at_onsets: bool = True,
) -> go.Figure | None:
    """The timelines (by default all five: KV usage, running/waiting, generation throughput, cumulative preemptions,
    HBM utilisation) as one figure of panels over a shared time axis, ``columns`` side by side; panels no source
    fills are left out (say so with ``missing_panels``). None when no source has any data."""
    rows = []
    for panel in panels:
        series = panel_series(panel, sources)
        if series:
            rows.append(TimelineRow(panel.title, panel.y_title, series, fraction=panel.fraction, step=panel.step))
    if not rows:
        return None
    onsets = cliff_onsets(sources, name_sources=name_sources_at_onsets)
    return stacked_timeline_figure(rows, title=title, cliff_onsets_s=onsets, columns=columns)


def missing_panels(sources: Sequence[Source]) -> list[str]:
    """Panels no source could fill (e.g. HBM bandwidth for a CPU run), so the page can say why they are absent."""
    return [p.title for p in PANELS if not any(_values(s.frame, c) is not None for s in sources for c in p.columns)]
