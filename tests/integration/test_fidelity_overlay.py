"""The Explore and Runs overlays print the fidelity report's per-series errors, for a bundled measured run.

The overlay path is the dashboard's own (pages.ui.predictions.run_prediction, pages.ui.compare, the timeline panel
the pages draw), run outside a Streamlit server on a real DuckDB file holding a real vLLM run from data/runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.fidelity.report import SERIES, series_error_text, validate
from engine.store import Store
from pages.ui import compare, data
from pages.ui.predictions import run_prediction
from pages.ui.timelines import PANEL, Source, timelines_figure

RUNS = Path(__file__).resolve().parents[2] / "data" / "runs"
# The TP=2 run is the only one of its hardware group: the report scores it uncalibrated (nothing else to fit on)
# and, with no calibration stored, the overlay predicts it uncalibrated too — the same prediction on both sides.
TP2_RUN = next(p for p in sorted(RUNS.iterdir()) if p.name.startswith("cpu-v-ab-layouts-tp2-"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    # The dashboard caches store queries per process, keyed without the store (it has one): forget other tests'.
    data.clear_store_queries()
    with Store(tmp_path_factory.mktemp("overlay") / "overlay.duckdb") as s:
        s.ingest(TP2_RUN)
        yield s
    data.clear_store_queries()


def test_overlay_errors_equal_the_reports(store: Store) -> None:
    run_id = TP2_RUN.name
    report = validate(store)
    row = next(r for r in report["runs"] if r["run_id"] == run_id)
    assert not row["calibrated"]
    prediction, why = run_prediction(store, run_id)
    assert prediction is not None, why
    errors = compare.overlay_errors(store, run_id, prediction)
    assert set(errors) == set(SERIES)
    for name in SERIES:
        assert errors[name]["err"] == row["series"][name]["err"], name
        assert errors[name]["shape_err"] == row["series"][name]["shape_err"], name
        assert row["series"][name]["err"] is not None and row["series"][name]["err"] > 0


def test_overlay_legend_words_the_reports_number(store: Store) -> None:
    run_id = TP2_RUN.name
    row = next(r for r in validate(store)["runs"] if r["run_id"] == run_id)
    prediction, _ = run_prediction(store, run_id)
    assert prediction is not None
    sources = [
        Source("predicted", "engine", prediction.timeline, prediction.summary.get("cliff_onset_s")),
        Source(
            "measured",
            "run",
            store.timeline(run_id, 600),
            None,
            errors=compare.overlay_errors(store, run_id, prediction),
        ),
    ]
    for panel_key, series in (("kv_usage", "kv_usage"), ("running_waiting", "running")):
        figure = timelines_figure(sources, title="", panels=[PANEL[panel_key]])
        assert figure is not None
        names = [trace.name for trace in figure.data if trace.name and trace.name.startswith("measured")]
        wanted = series_error_text(series, row["series"][series]["err"])
        assert any(wanted in name for name in names), (wanted, names)
