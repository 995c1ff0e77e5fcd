"""The dashboard's figures are built as plain dicts (no per-property validation on every rerun); here each builder's
output is put through plotly's full validation once, so a misspelt property cannot slip through."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from pages.ui.charts import (
    ROLE_DASH,
    Series,
    TimelineRow,
    cdf_figure,
    heatmap_figure,
    memory_figure,
    role_color,
    stacked_timeline_figure,
)
from pages.ui.timelines import thin


def validated(fig: go.Figure) -> dict:
    """Round-trip through plotly's validating constructor; raises ValueError on an unknown property."""
    return go.Figure(fig.to_dict()).to_dict()


def test_stacked_timelines_are_valid_plotly_share_time_and_list_each_source_once() -> None:
    x = np.linspace(0, 10, 50)
    predicted, measured = Series("predicted", "engine", x, x / 10), Series("measured", "run a", x, x / 9, note="e 1 pp")
    rows = [
        TimelineRow("KV cache usage", "KV in use (% of pool)", [predicted, measured], fraction=True),
        TimelineRow("Cumulative preemptions", "preemptions (count)", [predicted, Series("measured", "run a", x, x)],
                    step=True),
    ]  # fmt: skip
    spec = validated(stacked_timeline_figure(rows, title="t", cliff_onsets_s=[("predicted onset", 2.0)]))
    assert [t["yaxis"] for t in spec["data"]] == ["y", "y", "y2", "y2"] and {t["xaxis"] for t in spec["data"]} == {"x"}
    assert [t["showlegend"] for t in spec["data"]] == [True, True, False, True]  # the engine's line listed once
    assert spec["layout"]["yaxis"]["domain"][0] > spec["layout"]["yaxis2"]["domain"][1]  # KV on top, no overlap
    assert spec["layout"]["yaxis"]["tickformat"].endswith("%")
    assert "(count)" in spec["layout"]["yaxis2"]["title"]["text"]
    assert spec["layout"]["xaxis"]["title"]["text"].endswith("(s)")
    assert spec["layout"]["shapes"][0]["yref"] == "paper" and spec["layout"]["shapes"][0]["x0"] == 2.0  # all rows
    assert spec["data"][3]["line"]["shape"] == "hv"
    assert [t["line"]["dash"] for t in spec["data"][:2]] == [ROLE_DASH["predicted"], ROLE_DASH["measured"]]
    assert spec["data"][1]["line"]["color"] == role_color("measured")
    assert spec["data"][1]["name"] == "measured · run a · e 1 pp"
    assert spec["layout"]["template"]["layout"]["plot_bgcolor"] == "white"  # plotly_white, expanded


def test_timelines_side_by_side_share_one_time_range_and_mark_the_cliff_in_each_column() -> None:
    x = np.linspace(0, 10, 50)
    y = x / 10
    y[3] = np.nan
    predicted = Series("predicted", "engine", x, y)
    rows = [
        TimelineRow("KV cache usage", "KV in use (% of pool)", [predicted], fraction=True),
        TimelineRow("Cumulative preemptions", "preemptions (count)", [predicted], step=True),
    ]
    fig = stacked_timeline_figure(rows, title="", cliff_onsets_s=[("predicted onset", 2.0), ("measured", 2.1)],
                                  columns=2)  # fmt: skip
    spec = validated(fig)
    assert [(t["xaxis"], t["yaxis"]) for t in spec["data"]] == [("x", "y"), ("x2", "y2")]
    layout = spec["layout"]
    assert layout["xaxis2"]["matches"] == "x" and layout["xaxis2"]["title"]["text"].endswith("(s)")
    assert layout["xaxis"]["domain"][1] < layout["xaxis2"]["domain"][0]  # side by side, no overlap
    assert layout["yaxis"]["domain"] == layout["yaxis2"]["domain"]  # one row
    assert sorted((s["xref"], s["x0"]) for s in layout["shapes"]) == [("x", 2.0), ("x", 2.1), ("x2", 2.0), ("x2", 2.1)]
    labels = [a for a in layout["annotations"] if a.get("xref") == "x"]
    assert len(labels) == 2 and labels[0]["y"] > labels[1]["y"]  # two onsets at one time are not drawn on each other
    assert "title" not in layout or not layout["title"].get("text")
    assert fig.to_dict()["data"][0]["y"][3] is None  # a NaN is a gap, not invalid JSON


def test_other_figures_are_valid_plotly() -> None:
    validated(cdf_figure([Series("measured", "run a", [1, 2, 3], [0.3, 0.1, 0.2])], title="E2E", x_title="E2E (s)"))
    validated(memory_figure([{"label": "each GPU", "weights_gib": 16.0, "kv_gib": 100.0}], title="m", capacity_gib=141))
    z = np.array([[1.0, np.nan], [3.0, 4.0]])
    spec = validated(
        heatmap_figure(
            z, x_values=[1, 2], y_values=["a", "b"], x_title="x (seqs)", y_title="y", z_title="completion (s)",
            title="map", current=(1, "a"), boundary=[(2, "b")],
        )
    )  # fmt: skip
    assert len(spec["data"]) == 3


@pytest.mark.parametrize("n", [10, 599, 600, 601, 5000, 12345])
def test_thin_keeps_extremes_and_order(n: int) -> None:
    rng = np.random.default_rng(n)
    x = np.arange(n, dtype=float)
    y = rng.normal(size=n)
    y[n // 2] = 50.0
    y[n // 3] = -50.0
    if n > 20:
        y[7] = np.nan
    tx, ty = thin(x, y)
    assert len(tx) == n if n <= 600 else len(tx) <= 600
    assert np.all(np.diff(tx) > 0)
    assert 50.0 in ty and -50.0 in ty
