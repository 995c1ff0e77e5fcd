"""The cliff map: predicted completion time or preemptions over two scenario axes, and where the cliff begins.

Each cell is one full prediction (the same engine call Explore makes), so the map is cached per (scenario, axes,
metric) and computed only when its tab is open.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from engine.catalog import list_models
from engine.scenario import Scenario
from engine.simulate import SimulationError, predict

GRID = 5  # cells per axis: 25 predictions per map


@dataclass(frozen=True)
class Axis:
    key: str
    title: str  # with unit
    values: Callable[[Scenario], list]  # the grid values for a base scenario (the current value included)
    current: Callable[[Scenario], object]
    apply: Callable[[Scenario, object], Scenario]


def _around(current: int, ladder: list[int]) -> list[int]:
    """GRID values from a ladder, centred on the current value (which is always included)."""
    values = sorted(set(ladder) | {current})
    i = values.index(current)
    start = max(0, min(i - GRID // 2, len(values) - GRID))
    return values[start : start + GRID]


def _around_items(current: str, items: list[str]) -> list[str]:
    """GRID items of a list, centred on the current one (which is always included)."""
    values = items if current in items else [*items, current]
    i = values.index(current)
    start = max(0, min(i - GRID // 2, len(values) - GRID))
    return values[start : start + GRID]


def _length_scale(sc: Scenario) -> float:
    head, _, rest = sc.workload.partition(":")
    first = rest.split(",")[0]
    return float(first) if head == "reasoning" and first else 1.0


def _with_length(sc: Scenario, value: object) -> Scenario:
    head, _, rest = sc.workload.partition(":")
    if head == "fixed":
        isl = rest.split(",")[0]
        return replace(sc, workload=f"fixed:{isl},{int(value)}")  # type: ignore[call-overload]
    scale = float(value)  # type: ignore[arg-type]
    cap = rest.split(",")[1] if head == "reasoning" and "," in rest else ""
    if cap:
        return replace(sc, workload=f"reasoning:{scale:g},{cap}")
    return replace(sc, workload="reasoning" if scale == 1.0 else f"reasoning:{scale:g}")


def _length_values(sc: Scenario) -> list:
    head, _, rest = sc.workload.partition(":")
    if head == "fixed":
        osl = int(float(rest.split(",")[1]))
        return _around(osl, [256, 512, 1024, 2048, 4096, 8192, 16384, 32768])
    scale = _length_scale(sc)
    ladder = [0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0]
    values = sorted(set(ladder) | {scale})
    i = values.index(scale)
    start = max(0, min(i - GRID // 2, len(values) - GRID))
    return values[start : start + GRID]


def _current_length(sc: Scenario) -> object:
    head, _, rest = sc.workload.partition(":")
    if head == "fixed":
        return int(float(rest.split(",")[1]))
    return _length_scale(sc)


AXES: dict[str, Axis] = {
    "max_num_seqs": Axis(
        "max_num_seqs", "max_num_seqs (sequences)",
        lambda s: _around(s.max_num_seqs, [2**k for k in range(0, 15)]),
        lambda s: s.max_num_seqs, lambda s, v: replace(s, max_num_seqs=int(v)),
    ),
    "num_requests": Axis(
        "num_requests", "requests in the batch",
        lambda s: _around(s.num_requests, [125, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000]),
        lambda s: s.num_requests, lambda s, v: replace(s, num_requests=int(v)),
    ),
    "output_length": Axis(
        "output_length", "output length (OSL tokens, or × profile)",
        _length_values, _current_length, _with_length,
    ),
    "gpu_memory_utilization": Axis(
        "gpu_memory_utilization", "gpu_memory_utilization (fraction)",
        lambda s: sorted({0.6, 0.7, 0.8, 0.9, 0.95} | {s.gpu_memory_utilization})[-GRID:],
        lambda s: s.gpu_memory_utilization, lambda s, v: replace(s, gpu_memory_utilization=float(v)),
    ),
    "model": Axis(
        "model", "model (catalog)",
        lambda s: _around_items(s.model, list_models()),
        lambda s: s.model, lambda s, v: replace(s, model=str(v)),
    ),
}  # fmt: skip


def axis_title(key: str, sc: Scenario) -> str:
    """An axis title with its unit for this scenario (the length axis means OSL or a profile scale)."""
    if key == "output_length":
        fixed = sc.workload.startswith("fixed:")
        return "output length OSL (tokens)" if fixed else "length scale (× the reasoning profile)"
    return AXES[key].title


def axes_for(sc: Scenario) -> list[str]:
    """The axes that make sense for a scenario: output length only for the reasoning profile or fixed lengths."""
    head = sc.workload.partition(":")[0]
    return [k for k in AXES if k != "output_length" or head in ("reasoning", "fixed")]


METRICS = {
    "completion_s": "predicted completion time (s)",
    "preemptions": "predicted preemptions (count)",
}


@dataclass(frozen=True)
class CliffMap:
    x_values: list
    y_values: list
    z: np.ndarray  # [y, x]; NaN where the scenario cannot run
    preemptions: np.ndarray  # [y, x]
    failures: list[str]


@st.cache_data(show_spinner=False, max_entries=32)
def cliff_map(base: Scenario, x_key: str, y_key: str, metric: str, knee_seqs: int | None = None) -> CliffMap:
    """``knee_seqs``: the recommended max_num_seqs (engine.knee), added to that axis so the map can mark it."""
    x_axis, y_axis = AXES[x_key], AXES[y_key]
    xs, ys = x_axis.values(base), y_axis.values(base)
    if knee_seqs is not None and x_key == "max_num_seqs":
        xs = sorted({*xs, knee_seqs})
    elif knee_seqs is not None and y_key == "max_num_seqs":
        ys = sorted({*ys, knee_seqs})
    progress = st.progress(0.0, text=f"Computing the cliff map: {len(xs) * len(ys)} predictions…")
    z = np.full((len(ys), len(xs)), np.nan)
    pre = np.full((len(ys), len(xs)), np.nan)
    failures: list[str] = []
    for j, yv in enumerate(ys):
        for i, xv in enumerate(xs):
            sc = x_axis.apply(y_axis.apply(base, yv), xv)
            try:
                summary = predict(sc).summary
            except SimulationError as exc:
                failures.append(f"{x_key}={xv}, {y_key}={yv}: {exc}")
                continue
            value = summary.get(metric)
            z[j, i] = np.nan if value is None else float(value)
            pre[j, i] = float(summary.preemptions or 0)
        progress.progress((j + 1) / len(ys), text=f"Computing the cliff map: row {j + 1} of {len(ys)}…")
    progress.empty()
    return CliffMap(xs, ys, z, pre, failures)


def mark_knee(fig: go.Figure, knee_seqs: int, current: tuple[object, object], on_x: bool) -> None:
    """The recommended max_num_seqs (the predicted knee) as a star on the current row (or column) of the map."""
    x, y = (knee_seqs, current[1]) if on_x else (current[0], knee_seqs)
    fig.add_trace(
        go.Scatter(
            x=[str(x)],
            y=[str(y)],
            mode="markers",
            name=f"predicted knee: recommended max_num_seqs {knee_seqs:,}",
            marker={"symbol": "star", "size": 18, "color": "#0abde3", "line": {"width": 1.5, "color": "#1e272e"}},
            hovertemplate=f"recommended max_num_seqs {knee_seqs:,} (predicted knee)<extra>predicted</extra>",
        )
    )


def boundary(cm: CliffMap) -> list[tuple[object, object]]:
    """Per x value, the first y value (in axis order) at which the batch is predicted to preempt: the cliff edge."""
    points = []
    for i, xv in enumerate(cm.x_values):
        column = cm.preemptions[:, i]
        hit = np.flatnonzero(np.nan_to_num(column, nan=0.0) > 0)
        if hit.size:
            points.append((xv, cm.y_values[int(hit[0])]))
    return points
