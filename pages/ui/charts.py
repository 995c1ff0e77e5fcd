"""Plotly figures in one visual language across pages.

Predicted series are always blue and dashed, measured series always orange and solid, published figures green, so a
reader learns the code once. Several runs compared side by side each keep one shade of their role's colour on every
row (run 2's measured lines are the same orange everywhere), and a source's second line in a row (waiting beside
running) is drawn in the same shade with its role's second dash, so no two lines of a row look alike. Every axis
carries its unit and every trace says what it is and where it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

Role = Literal["predicted", "measured", "published"]

# Shades per role: the first is the main one; later shades tell up to four compared runs apart within a role. A run
# keeps its shade on every row; its other line in a row differs by dash (ROLE_DASHES), never by another run's shade.
ROLE_COLORS: dict[Role, tuple[str, ...]] = {
    "predicted": ("#1f5fbf", "#4a90e2", "#7fb3f5", "#0b3d91"),
    "measured": ("#e8630a", "#b84a00", "#f59e4c", "#8a3500"),
    "published": ("#2e8b57", "#1e6b40", "#5cb87f", "#0f4d2a"),
}
# Dashes per role: the first for a source's main line, the second for its other line in the same row (waiting beside
# running). Each role's pair stays recognisably its own: predicted lines all have dashes, measured ones none.
ROLE_DASHES: dict[Role, tuple[str, str]] = {
    "predicted": ("dash", "dashdot"),
    "measured": ("solid", "dot"),
    "published": ("dot", "longdashdot"),
}
ROLE_DASH: dict[Role, str] = {role: dashes[0] for role, dashes in ROLE_DASHES.items()}
CLIFF_COLOR = "#c0392b"
TIME_AXIS = "time since the batch was submitted (s)"
FIGURE_HEIGHT_PX = 340


def role_color(role: Role, index: int = 0) -> str:
    """The colour of the index-th series of a role (measured run 0..3, predicted 0..3)."""
    shades = ROLE_COLORS[role]
    return shades[index % len(shades)]


def role_dash(role: Role, variant: int = 0) -> str:
    """The dash of a source's variant-th line within one row (0: its main line, 1: e.g. waiting beside running)."""
    dashes = ROLE_DASHES[role]
    return dashes[variant % len(dashes)]


@dataclass(frozen=True)
class Series:
    """One line on a timeline: what it is (role), where it came from (source) and its data."""

    role: Role
    source: str  # e.g. "engine 2026-11 for this scenario" or "run cpu-opt125m-001"
    x: Sequence[float] | np.ndarray
    y: Sequence[float] | np.ndarray
    index: int = 0  # which shade of its role: one per source (run), the same on every row
    variant: int = 0  # which of its source's lines in one row (0: the main one, 1: e.g. waiting): picks the dash
    note: str = ""  # appended to the legend, e.g. the error against the prediction

    @property
    def label(self) -> str:
        text = f"{self.role} · {self.source}"
        return f"{text} · {self.note}" if self.note else text


def _layout(*, title: str, x_title: str, y_title: str, height: int = FIGURE_HEIGHT_PX) -> dict[str, Any]:
    """The shared layout as a plain dict: title, axis titles with units, compact margins, legend under the plot."""
    return {
        "template": _template(),
        "title": {"text": title, "font": {"size": 15}},
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 40, "b": 10},
        "legend": {
            "orientation": "h",
            "yanchor": "top",
            "y": _legend_y(height),
            "xanchor": "left",
            "x": 0,
            "font": {"size": 10},
        },
        "showlegend": True,
        "hovermode": "x unified",
        "xaxis": {"title": {"text": x_title}, "zeroline": False},
        "yaxis": {"title": {"text": y_title}, "zeroline": False},
    }


def _legend_y(height_px: int) -> float:
    """The legend's top in plot fractions, so it clears the x-axis title (about 62 px below the plot) at any height."""
    plot_px = max(height_px - 90, 60)
    return -62 / plot_px


def base_layout(fig: go.Figure, *, title: str, x_title: str, y_title: str, height: int = FIGURE_HEIGHT_PX) -> None:
    """The shared layout applied to a figure built with plotly's objects (pages drawing one-off charts)."""
    fig.update_layout(_layout(title=title, x_title=x_title, y_title=y_title, height=height))


@cache
def _template() -> dict[str, Any]:
    """plotly_white as a plain dict, expanded once (plotly expands a template name on every figure otherwise)."""
    return pio.templates["plotly_white"].to_plotly_json()


def _figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> go.Figure:
    """A figure from plain dicts without plotly's per-property validation, which costs tens of milliseconds per
    chart and runs on every slider move. The dicts are checked against plotly's schema in tests/unit."""
    return go.Figure({"data": data, "layout": layout}, _validate=False)


def figure_from_spec(spec: dict[str, Any]) -> go.Figure:
    """A figure again from the dict of one built here (``fig.to_dict()``, e.g. kept in a cache), unvalidated."""
    return go.Figure(spec, _validate=False)


def _array(values: Sequence[float] | np.ndarray) -> list[Any]:
    """Plain floats for JSON (non-finite values become gaps)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "fc":
        return [float(v) if np.isfinite(v) else None for v in arr.tolist()]
    return arr.tolist()


@dataclass(frozen=True)
class TimelineRow:
    """One row of a stacked timeline figure: its title, its y axis (title with unit) and its lines."""

    title: str
    y_title: str
    series: Sequence[Series]
    fraction: bool = False
    step: bool = False


ROW_PLOT_PX = 150  # each row's plotting height
ROW_GAP_PX = 34  # room above each row for its title
STACK_TOP_PX = 64  # figure title, then the first row's title
ONSET_LABEL_PX = 18  # vertical spacing of cliff-onset labels beside their lines (two onsets can sit at one time)
ONSET_LABELS_AT_LINES = 2  # more cliff onsets than this are listed under the figure, not beside their lines
STACK_BOTTOM_PX = 56  # the shared time axis's ticks and title (the legend goes below, in its own margin)


def _line(s: Series, step: bool) -> dict[str, Any]:
    return {"color": role_color(s.role, s.index), "dash": role_dash(s.role, s.variant), "width": 2,
            "shape": "hv" if step else "linear"}  # fmt: skip


LEGEND_WIDTH_PX = 760  # the narrowest plot width expected (1280 px window with the sidebar open)


def _legend_height_px(names: Sequence[str], font_px: float = 11) -> int:
    """Room for a horizontal legend of these entries wrapped at LEGEND_WIDTH_PX (about 0.5 em per character plus
    the line sample), so the rows keep their height however many runs are compared."""
    lines, used = 1, 0.0
    for name in names:
        width = len(name) * font_px * 0.5 + 50
        if used and used + width > LEGEND_WIDTH_PX:
            lines, used = lines + 1, 0.0
        used += width
    return int(lines * (font_px + 18) + 10)


def stacked_timeline_figure(
    rows: Sequence[TimelineRow], *, title: str, cliff_onsets_s: Sequence[tuple[str, float]] = (), columns: int = 1
) -> go.Figure:
    """Timelines as panels over one time axis, so a KV ceiling, the queue growing, throughput falling and
    preemptions starting line up in time; one figure, so a slider move redraws one chart instead of five.

    Panels fill a grid of ``columns`` columns row by row (one column: rows stacked over a single time axis; more:
    each column has its own time axis, all of the same range). Every panel has its title and y axis with unit; the
    cliff onsets are vertical lines through every panel. A line named as one already in the legend (the same source
    in another panel) joins its legend group instead of adding an entry, so the legend lists each source once per
    distinct label (e.g. each measured series with its error).
    """
    n_rows = -(-len(rows) // columns)
    plot_px = n_rows * ROW_PLOT_PX + (n_rows - 1) * ROW_GAP_PX
    top_px = STACK_TOP_PX if title else ROW_GAP_PX
    names = list(dict.fromkeys(s.label for row in rows for s in row.series))
    legend_px = _legend_height_px(names)
    labelled_at_lines = len(cliff_onsets_s) <= ONSET_LABELS_AT_LINES
    onsets_px = 0 if labelled_at_lines else 16 * len(cliff_onsets_s) + 8
    height = plot_px + top_px + STACK_BOTTOM_PX + legend_px + onsets_px
    layout: dict[str, Any] = {
        "template": _template(),
        "height": height,
        "margin": {"l": 70, "r": 20, "t": top_px, "b": STACK_BOTTOM_PX + legend_px + onsets_px},
        "legend": {"orientation": "h", "yanchor": "top", "y": -(STACK_BOTTOM_PX + onsets_px) / plot_px,
                   "xanchor": "left", "x": 0, "font": {"size": 11}},
        "showlegend": True,
        "hovermode": "x unified",
        "hoversubplots": "axis",
    }  # fmt: skip
    if title:
        layout["title"] = {"text": title, "font": {"size": 15}}
    x_domains = _column_domains(columns)
    x_names = ["x" if c == 0 else f"x{c + 1}" for c in range(columns)]
    for c in range(min(columns, len(rows))):
        bottom = max(i for i in range(len(rows)) if i % columns == c)  # the column's lowest panel carries its axis
        layout["xaxis" if c == 0 else f"xaxis{c + 1}"] = {
            "title": {"text": TIME_AXIS}, "zeroline": False, "anchor": "y" if bottom == 0 else f"y{bottom + 1}",
            "domain": x_domains[c], **({"matches": "x"} if c else {}),
        }  # fmt: skip
    data: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        row_top_px = (i // columns) * (ROW_PLOT_PX + ROW_GAP_PX)
        domain = [1 - (row_top_px + ROW_PLOT_PX) / plot_px, 1 - row_top_px / plot_px]
        axis = "y" if i == 0 else f"y{i + 1}"
        x_name = x_names[i % columns]
        yaxis: dict[str, Any] = {
            "domain": [max(domain[0], 0.0), min(domain[1], 1.0)],
            "anchor": x_name,
            "title": {"text": row.y_title.replace(" (", "<br>("), "font": {"size": 11}},
            "zeroline": False,
            "rangemode": "tozero",
        }
        if row.fraction:
            yaxis["tickformat"] = ".3~%"  # 30%, 0.5%: small fractions keep distinct tick labels
        layout["yaxis" if i == 0 else f"yaxis{i + 1}"] = yaxis
        annotations.append(
            {"text": f"<b>{row.title}</b>", "showarrow": False, "xref": "paper", "x": x_domains[i % columns][0],
             "xanchor": "left", "yref": "paper", "y": yaxis["domain"][1], "yanchor": "bottom", "font": {"size": 13}}
        )  # fmt: skip
        for s in row.series:
            name = s.label
            data.append(
                {"type": "scatter", "x": _array(s.x), "y": _array(s.y), "xaxis": x_name, "yaxis": axis,
                 "mode": "lines", "name": name, "legendgroup": name, "showlegend": name not in seen,
                 "line": _line(s, row.step)}
            )  # fmt: skip
            seen.add(name)
    used_x = x_names[: min(columns, len(rows))]
    layout["shapes"] = [
        {"type": "line", "x0": onset_s, "x1": onset_s, "xref": x_name, "y0": 0, "y1": 1, "yref": "paper",
         "line": {"color": CLIFF_COLOR, "dash": "dot", "width": 1.5}}
        for x_name in used_x
        for _, onset_s in cliff_onsets_s
    ]  # fmt: skip
    if labelled_at_lines:
        annotations += [
            {"x": onset_s, "xref": x_name, "y": 1.0 - ONSET_LABEL_PX * i / plot_px, "yref": "paper",
             "text": label, "showarrow": False, "xanchor": "left", "yanchor": "top",
             "font": {"color": CLIFF_COLOR, "size": 11}, "bgcolor": "rgba(255,255,255,0.7)"}
            for x_name in used_x[:1]
            for i, (label, onset_s) in enumerate(cliff_onsets_s)
        ]  # fmt: skip
    else:  # too many to label at their lines (they crowd the first row): listed under the time axis
        annotations.append(
            {"text": "cliff onsets (red dotted lines): " + "<br>".join(label for label, _ in cliff_onsets_s),
             "showarrow": False, "xref": "paper", "x": 0, "xanchor": "left", "yref": "paper",
             "y": -STACK_BOTTOM_PX / plot_px, "yanchor": "top", "align": "left",
             "font": {"color": CLIFF_COLOR, "size": 11}}
        )  # fmt: skip
    layout["annotations"] = annotations
    return _figure(data, layout)


def _column_domains(columns: int, gap: float = 0.1) -> list[list[float]]:
    """Each grid column's horizontal span in paper fractions, with room between for the next column's y axis."""
    width = (1 - gap * (columns - 1)) / columns
    return [[c * (width + gap), c * (width + gap) + width] for c in range(columns)]


def cdf_figure(series: Sequence[Series], *, title: str, x_title: str) -> go.Figure:
    """Empirical CDFs (x: the metric with its unit, y: fraction of requests)."""
    data = []
    for s in series:
        values = np.sort(np.asarray(s.y, dtype=float))
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        frac = np.arange(1, values.size + 1) / values.size
        data.append(
            {
                "type": "scatter", "x": _array(values), "y": _array(frac), "mode": "lines", "name": s.label,
                "line": {"color": role_color(s.role, s.index), "dash": role_dash(s.role, s.variant), "width": 2,
                         "shape": "hv"},
            }
        )  # fmt: skip
    names = [d["name"] for d in data]
    extra_legend_px = _legend_height_px(names) - _legend_height_px(names[:1])  # keep the plot's height with 4 runs
    layout = _layout(title=title, x_title=x_title, y_title="fraction of requests (CDF)",
                     height=FIGURE_HEIGHT_PX + extra_legend_px)  # fmt: skip
    layout["hovermode"] = "closest"
    layout["yaxis"].update(tickformat=".0%", range=[0, 1.02])
    return _figure(data, layout)


def memory_figure(per_gpu: Sequence[dict[str, float]], *, title: str, capacity_gib: float) -> go.Figure:
    """Stacked bars per GPU: weights, activations, KV cache, stranded/free (GiB), against device capacity."""
    parts = [
        ("weights_gib", "weights", "#34495e"),
        ("activations_gib", "activations / runtime", "#95a5a6"),
        ("kv_gib", "KV cache", ROLE_COLORS["predicted"][0]),
        ("stranded_gib", "stranded (KV pool not usable)", "#e74c3c"),
        ("free_gib", "free (outside gpu_memory_utilization)", "#dfe6e9"),
    ]
    labels = [str(g.get("label", f"GPU {i}")) for i, g in enumerate(per_gpu)]
    data = []
    for key, name, color in parts:
        values = [float(g.get(key, 0.0)) for g in per_gpu]
        if not any(v > 0 for v in values):
            continue
        data.append(
            {
                "type": "bar", "x": labels, "y": values, "name": f"{name} (predicted)", "marker": {"color": color},
                "hovertemplate": "%{x}: %{y:.2f} GiB<extra>" + name + "</extra>",
            }
        )  # fmt: skip
    layout = _layout(title=title, x_title="GPU (rank in the layout)", y_title="memory per GPU (GiB)")
    layout.update(barmode="stack", hovermode="closest")
    layout["shapes"] = [
        {"type": "line", "xref": "x domain", "x0": 0, "x1": 1, "yref": "y", "y0": capacity_gib, "y1": capacity_gib,
         "line": {"color": "#2d3436", "dash": "dot"}}
    ]  # fmt: skip
    layout["annotations"] = [
        {"text": "device memory", "showarrow": False, "xref": "x domain", "x": 1, "xanchor": "right", "yref": "y",
         "y": capacity_gib, "yanchor": "bottom"}
    ]  # fmt: skip
    return _figure(data, layout)


def heatmap_figure(
    z: np.ndarray,
    *,
    x_values: Sequence[float | int | str],
    y_values: Sequence[float | int | str],
    x_title: str,
    y_title: str,
    z_title: str,
    title: str,
    current: tuple[float | int | str, float | int | str] | None,
    boundary: Sequence[tuple[float | int | str, float | int | str]] = (),
) -> go.Figure:
    """A cliff map: z[y_index, x_index] over two axes, the current scenario marked, the cliff boundary drawn."""
    x_labels = [str(v) for v in x_values]
    y_labels = [str(v) for v in y_values]
    data: list[dict[str, Any]] = [
        {
            "type": "heatmap", "z": [_array(row) for row in np.asarray(z, dtype=float)], "x": x_labels, "y": y_labels,
            "colorscale": "YlOrRd", "colorbar": {"title": {"text": z_title, "side": "right"}},
            "hovertemplate": f"{x_title}: %{{x}}<br>{y_title}: %{{y}}<br>{z_title}: %{{z:.3g}}<extra>predicted</extra>",
        }
    ]  # fmt: skip
    if boundary:
        data.append(
            {
                "type": "scatter", "x": [str(b[0]) for b in boundary], "y": [str(b[1]) for b in boundary],
                "mode": "lines+markers", "name": "cliff boundary (first preemption, predicted)",
                "line": {"color": "#2d3436", "width": 3}, "marker": {"size": 6},
            }
        )  # fmt: skip
    if current is not None:
        data.append(
            {
                "type": "scatter", "x": [str(current[0])], "y": [str(current[1])], "mode": "markers",
                "name": "this scenario",
                "marker": {"symbol": "x", "size": 16, "color": "#1e272e", "line": {"width": 2, "color": "white"}},
            }
        )  # fmt: skip
    layout = _layout(title=title, x_title=x_title, y_title=y_title, height=420)
    layout["hovermode"] = "closest"
    layout["xaxis"]["type"] = "category"
    layout["yaxis"]["type"] = "category"
    return _figure(data, layout)
