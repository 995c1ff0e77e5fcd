"""The calibrations shipped with the bundled runs (data/runs/calibrations.json): a new default database loads them,
they are what refitting those runs gives today, and a stale or edited one is never loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.fidelity import calibration_for
from engine.fidelity.calibrate import fit_groups
from engine.fidelity.report import predict_case
from engine.fidelity.runs import device_key, load_case, load_cases
from engine.store import Store, open_store
from engine.store.calibrations import ARTEFACT_NAME

RUNS = Path(__file__).resolve().parents[2] / "data" / "runs"
SHIPPED = json.loads((RUNS / ARTEFACT_NAME).read_text())
REGENERATE = (
    "regenerate it: rm -f /tmp/fresh.duckdb && python -m engine import data/runs --db /tmp/fresh.duckdb && "
    "python -m engine calibrate --db /tmp/fresh.duckdb --export data/runs/calibrations.json"
)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Store:
    with open_store(tmp_path_factory.mktemp("seeded") / "first-start.duckdb", seed_dir=RUNS) as store:
        yield store


def test_a_new_default_database_loads_the_shipped_calibrations(seeded: Store) -> None:
    assert all(r.ok for r in seeded.seed_reports)
    assert len(seeded.seed_calibration_notes) == len(SHIPPED["calibrations"]) >= 1
    assert all(": loaded," in note for note in seeded.seed_calibration_notes), (
        seeded.seed_calibration_notes,
        REGENERATE,
    )
    stored = seeded.calibrations()
    assert sorted(stored["calibration_id"].to_list()) == sorted(c["calibration_id"] for c in SHIPPED["calibrations"])
    assert all(o.startswith("shipped with the bundled runs") for o in stored["origin"].to_list())
    # A measured run's first prediction uses it, and says which one and from where.
    record = SHIPPED["calibrations"][0]
    meta = seeded.run_meta(record["run_ids"][0])
    assert device_key(meta) == record["device_key"]
    calibration = calibration_for(seeded, meta)
    assert calibration.mem_efficiency == pytest.approx(record["params"]["mem_efficiency"])
    prediction = predict_case(load_case(seeded, record["run_ids"][0]), calibration)
    said = prediction.summary["calibration"]
    assert record["calibration_id"] in said and "shipped with the bundled runs" in said


def test_refitting_the_bundled_runs_reproduces_the_shipped_calibrations(seeded: Store) -> None:
    cases, _ = load_cases(seeded)
    refit = {(r.group[0], r.group[1]): r.as_record() for r in fit_groups(cases)}
    assert sorted(refit) == sorted((c["device_key"], c["vllm_version"]) for c in SHIPPED["calibrations"]), REGENERATE
    for shipped in SHIPPED["calibrations"]:
        again = refit[(shipped["device_key"], shipped["vllm_version"])]
        assert again["run_ids"] == shipped["run_ids"], REGENERATE
        assert again["fitted"] == shipped["fitted"], REGENERATE
        assert again["params"] == pytest.approx(shipped["params"], rel=1e-6), REGENERATE
        assert again["loss"] == pytest.approx(shipped["loss"], rel=1e-6), REGENERATE
        for run_id, residuals in shipped["residuals"].items():
            assert again["residuals"][run_id] == pytest.approx(residuals, rel=1e-6, abs=1e-9), (run_id, REGENERATE)


def test_a_stale_or_edited_calibration_is_not_loaded(tmp_path: Path) -> None:
    record = SHIPPED["calibrations"][0]
    with Store(tmp_path / "partial.duckdb") as store:
        store.ingest(RUNS / record["run_ids"][0])  # one of its runs only: the others are absent
        notes = store.import_calibrations(RUNS / ARTEFACT_NAME, origin="test")
        assert any("absent or differ" in n for n in notes)
        edited = {**SHIPPED, "calibrations": [{**record, "params": {**record["params"], "mem_efficiency": 9.0}}]}
        path = tmp_path / "edited.json"
        path.write_text(json.dumps(edited))
        assert "does not hash to its id" in store.import_calibrations(path, origin="test")[0]
        (tmp_path / "broken.json").write_text("{ not json")
        assert "not loaded" in store.import_calibrations(tmp_path / "broken.json", origin="test")[0]
        assert store.calibrations().height == 0


def test_the_first_screens_measured_cliff_is_predicted_with_it_and_says_so(seeded: Store) -> None:
    """Explore's first screen (default scenario) shows the nearest bundled run with a measured cliff beside its own
    prediction; on a new default database that prediction uses the shipped calibration and names it."""
    from engine.scenario import Scenario
    from pages.ui import compare, data
    from pages.ui.measured_cliff import nearest_measured_cliff
    from pages.ui.predictions import run_prediction

    # The dashboard caches store queries per process, keyed without the store (it has one): forget other tests'.
    data.clear_store_queries()
    try:
        found = nearest_measured_cliff(seeded, Scenario())
        assert found is not None
        prediction, why = run_prediction(seeded, found.run_id)
        assert prediction is not None, why
        note = compare.calibration_note(f"run {found.name}", prediction)
    finally:
        data.clear_store_queries()
    shipped = {c["calibration_id"] for c in SHIPPED["calibrations"] if found.run_id in c["run_ids"]}
    assert len(shipped) == 1 and shipped.pop() in note and "shipped with the bundled runs" in note
