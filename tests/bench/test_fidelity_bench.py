"""Why a new database loads the bundled runs' calibrations instead of fitting them (run with ``make bench``).

The dashboard's first load has a 3 s budget (tests/bench/test_dashboard_bench.py, which seeds a fresh database).
Fitting one calibration per hardware group on the bundled runs (what ``python -m engine calibrate`` does) is measured
here against loading the shipped fits (``data/runs/calibrations.json``), both on a database seeded from data/runs.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from engine.fidelity.calibrate import fit_groups
from engine.fidelity.runs import load_cases
from engine.store import Store
from engine.store.calibrations import ARTEFACT_NAME

pytestmark = pytest.mark.bench

RUNS = Path(__file__).resolve().parents[2] / "data" / "runs"
FIRST_LOAD_BUDGET_S = 3.0
LOAD_BUDGET_S = 0.1  # loading the shipped fits: a small part of the first load


def test_fitting_vs_loading_the_bundled_calibrations(tmp_path: Path) -> None:
    with Store(tmp_path / "seeded.duckdb") as store:
        store.ingest_many(sorted(p for p in RUNS.iterdir() if (p / "run.json").is_file()))
        fit_times, load_times = [], []
        for _ in range(2):
            start = time.perf_counter()
            cases, _ = load_cases(store)
            fit_groups(cases)
            fit_times.append(time.perf_counter() - start)
        for i in range(5):
            with Store(tmp_path / f"load-{i}.duckdb") as fresh:
                fresh.ingest_many(sorted(p for p in RUNS.iterdir() if (p / "run.json").is_file()))
                start = time.perf_counter()
                notes = fresh.import_calibrations(RUNS / ARTEFACT_NAME, origin="bench")
                load_times.append(time.perf_counter() - start)
                assert all(": loaded," in n for n in notes), notes
    fit_s, load_s = statistics.median(fit_times), statistics.median(load_times)
    verdict = "ship the fits" if fit_s > FIRST_LOAD_BUDGET_S else "fitting at first start would fit the budget"
    print(
        f"\nfit one calibration per group on {len(cases)} bundled runs: median {fit_s:.2f} s; load the shipped fits: "
        f"median {load_s * 1000:.1f} ms (first-load budget {FIRST_LOAD_BUDGET_S:.0f} s: {verdict})"
    )
    assert load_s <= LOAD_BUDGET_S
