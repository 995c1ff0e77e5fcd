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
    timeline_figure,
)
from pages.ui.timelines import thin


def validated(fig: go.Figure) -> dict:
    """Round-trip through plotly's validating constructor; raises ValueError on an unknown property."""
    return go.Figure(fig.to_dict()).to_dict()


def test_timeline_figure_is_valid_plotly_and_keeps_roles() -> None:
    x = np.linspace(0, 10, 50)
    y = np.sin(x)
    y[3] = np.nan
    fig = timeline_figure(
        [Series("predicted", "engine", x, y), Series("measured", "run a", x, y, note="error 1 pp")],
        title="KV cache usage", y_title="KV (%)", y_is_fraction=True, cliff_onsets_s=[("predicted onset", 2.0)],
        step=True,
    )  # fmt: skip
    spec = validated(fig)
    assert [t["line"]["dash"] for t in spec["data"]] == [ROLE_DASH["predicted"], ROLE_DASH["measured"]]
    assert spec["data"][1]["line"]["color"] == role_color("measured")
    assert spec["data"][1]["name"] == "measured · run a · error 1 pp"
    assert spec["layout"]["xaxis"]["title"]["text"].endswith("(s)")
    assert spec["layout"]["shapes"][0]["x0"] == 2.0
    assert spec["layout"]["template"]["layout"]["plot_bgcolor"] == "white"  # plotly_white, expanded
    assert fig.to_dict()["data"][0]["y"][3] is None  # a NaN is a gap, not invalid JSON


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
