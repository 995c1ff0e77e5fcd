"""Compared runs on the Runs page's stacked timelines: every line of a row is told apart by (colour, dash), each run
keeps one shade on every row, and predicted/measured keep their colours (blue dashed, orange solid)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import polars as pl

from pages.ui.charts import ROLE_COLORS, ROLE_DASH
from pages.ui.timelines import PANELS, Source, timelines_figure

RUNS = 4  # the Runs page compares up to four (pages/views/runs.py MAX_COMPARE)


def run_frame(seed: int) -> pl.DataFrame:
    """A wide timeline with every panel's columns, as a prediction gives it."""
    rng = np.random.default_rng(seed)
    t_s = np.linspace(0.0, 60.0, 120)
    columns = {c: rng.uniform(0.0, 1.0, t_s.size) for panel in PANELS for c in panel.columns}
    return pl.DataFrame({"t_s": t_s, **columns})


def compared_sources() -> list[Source]:
    """Four runs, each measured and beside its own prediction, with the shade index the Runs page gives them."""
    sources = []
    for i in range(RUNS):
        sources.append(Source("predicted", f"engine for run r{i}", run_frame(2 * i), None, index=i))
        sources.append(Source("measured", f"run r{i}", run_frame(2 * i + 1), None, index=i))
    return sources


def traces() -> list[dict]:
    fig = timelines_figure(compared_sources(), title="Measured runs")
    assert fig is not None
    return [t for t in fig.to_dict()["data"] if t.get("visible", True) is True]


def test_no_two_lines_of_a_row_share_colour_and_dash() -> None:
    by_row: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for t in traces():
        by_row[t.get("yaxis", "y")].append((t["line"]["color"], t["line"]["dash"], t["name"]))
    assert len(by_row) == len(PANELS)
    running_waiting = by_row["y2"]  # the second panel: two lines per source
    assert len(running_waiting) == 2 * 2 * RUNS
    for row, lines in by_row.items():
        styles = [(color, dash) for color, dash, _ in lines]
        clashes = {style: [n for c, d, n in lines if (c, d) == style] for style in styles if styles.count(style) > 1}
        assert not clashes, f"row {row}: lines drawn alike: {clashes}"


def test_each_run_keeps_one_shade_and_roles_keep_their_colours() -> None:
    shades: dict[str, set[str]] = defaultdict(set)
    for t in traces():
        role, source = t["name"].split(" · ")[:2]
        shades[f"{role} · {source}"].add(t["line"]["color"])
        assert t["line"]["color"] in ROLE_COLORS[role]  # predicted blue, measured orange, whatever the run
        if "waiting" not in t["name"]:
            assert t["line"]["dash"] == ROLE_DASH[role]  # predicted dashed, measured solid
    assert len(shades) == 2 * RUNS
    assert all(len(colors) == 1 for colors in shades.values()), shades  # one shade per run on every row
    for role in ("predicted", "measured"):
        used = [next(iter(c)) for key, c in shades.items() if key.startswith(role)]
        assert len(set(used)) == RUNS  # and no two runs share one
