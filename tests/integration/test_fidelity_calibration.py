"""Calibration on real bundles in a real DuckDB store: runs the engine simulated with known parameters (plus 2 %
noise on every request's times) give those parameters back; stored calibrations round-trip; a calibration never
changes a prediction that does not use it; the CLI prints the report's documented shape."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.fidelity import calibration_for, calibration_from_record
from engine.fidelity.calibrate import PARAM_BOUNDS, cross_validate, fit, layout_of
from engine.fidelity.runs import load_cases
from engine.perf import Calibration
from engine.scenario import Scenario
from engine.simulate import predict
from engine.store import Store
from tests.support.synthetic_runs import DEFAULT_RUNS, TRUE_CALIBRATION, SyntheticRun, meta_for, write_synthetic

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fidelity")
    path = root / "synthetic.duckdb"
    with Store(path) as store:
        for i, run in enumerate(DEFAULT_RUNS):
            store.ingest(write_synthetic(root / "inbox", run, noise=0.02, seed=i))
    return path


def test_a_fit_pressing_on_a_ceiling_is_flagged_at_it(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs were made with a 4 ms step overhead: under a 2 ms ceiling the fit ends at (or just inside) it, and
    says so, rather than passing off the clamped value as a finding."""
    with Store(db) as store:
        cases, _ = load_cases(store)
    monkeypatch.setitem(PARAM_BOUNDS, "step_overhead_s", (1e-6, 2e-3))
    result = fit([c for c in cases if c.scenario.dp == 1], max_evals=60)
    assert result.fitted["step_overhead_s"] <= 2e-3
    assert result.at_bound.get("step_overhead_s") == "upper"


def test_fit_recovers_the_parameters_that_made_the_runs(db: Path) -> None:
    with Store(db) as store:
        cases, skipped = load_cases(store)
    assert not skipped and len(cases) == len(DEFAULT_RUNS)
    # One calibration per host across layouts: the DP=2 run shares the group (its ranks' contention is a parameter).
    assert {c.device_key for c in cases} == {"cpu-synthetic-cpu-9000-1t"}
    cases = [c for c in cases if c.scenario.dp == 1]
    result = fit(cases, max_evals=400)
    assert set(result.fitted) == {"mem_efficiency", "compute_efficiency", "step_overhead_s", "per_seq_overhead_s"}
    for name, value in result.fitted.items():
        truth = getattr(TRUE_CALIBRATION, name)
        assert abs(math.log(value / truth)) < math.log(1.10), (name, value, truth)
        low, high = PARAM_BOUNDS[name]
        assert low <= value <= high
        # Each parameter comes with its uncertainty from the Jacobian; the truth lies within 3 sigma.
        sigma = result.uncertainty[name]
        assert sigma is not None and 0 < sigma < 0.5 and abs(math.log(value / truth)) < 3 * sigma + 0.02
    assert result.at_bound == {} and result.as_record()["uncertainty"] == result.uncertainty
    assert result.loss < 0.1 * result.loss_start
    # Residuals at the fit are at the noise level.
    worst = max(abs(v) for res in result.residuals.values() for v in res.values())
    assert worst < 0.15


def test_cross_validation_never_scores_a_run_with_a_fit_that_saw_it(db: Path) -> None:
    with Store(db) as store:
        cases, _ = load_cases(store)
    held = cross_validate(cases, k=3, max_evals=150)
    assert set(held) == {c.run_id for c in cases}
    for run_id, h in held.items():
        assert run_id not in h.train_run_ids and len(h.train_run_ids) >= 4
        assert "held out" in h.calibration.source


def test_layout_and_source_folds_never_let_a_fit_see_the_scored_layout_or_source(db: Path) -> None:
    with Store(db) as store:
        cases, _ = load_cases(store)
    by_id = {c.run_id: c for c in cases}
    held = cross_validate(cases, max_evals=100, fold_by=layout_of)
    assert {h.folds for h in held.values()} == {2}  # DP=1 and DP=2: each held out whole
    for run_id, h in held.items():
        assert by_id[run_id].layout not in {by_id[t].layout for t in h.train_run_ids}
        assert h.train_run_ids and "layout" in h.calibration.source
    # Source folds: pretend the runs came from two sources; no training record shares the scored one's source.
    source = {c.run_id: ("thread-a" if c.run_id in ("syn-b1", "syn-b8", "syn-dp2") else "report-b") for c in cases}
    held = cross_validate(cases, max_evals=100, fold_by=lambda c: source[c.run_id])
    for run_id, h in held.items():
        assert h.train_run_ids and source[run_id] not in {source[t] for t in h.train_run_ids}


def test_stored_calibration_round_trips_and_applies_only_to_its_hardware(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(db.read_bytes())
    with Store(copy) as store:
        cases, _ = load_cases(store)
        cases = [c for c in cases if c.scenario.dp == 1]
        gpu_meta = {"device": "H200", "vllm_version": "0.32.0"}
        assert calibration_for(store, gpu_meta) == Calibration()  # nothing stored yet
        result = fit(cases, max_evals=200)
        cal_id = store.save_calibration(result.as_record())
        assert store.save_calibration(result.as_record()) == cal_id  # same content, same id, stored once
        assert store.calibrations().height == 1
        record = store.calibration(cal_id)
        assert sorted(record["run_ids"]) == sorted(c.run_id for c in cases)
        restored = calibration_from_record(record)
        for name, value in result.fitted.items():
            assert getattr(restored, name) == pytest.approx(value)
        assert cal_id in restored.source
        cpu_meta = meta_for(SyntheticRun("x", 32, 32, 1, 1))
        assert calibration_for(store, cpu_meta).source == restored.source
        # Other hardware, or another vLLM version, keeps the defaults.
        assert calibration_for(store, gpu_meta) == Calibration()
        assert calibration_for(store, {**cpu_meta, "vllm_version": "0.99.0"}) == Calibration()
    # A GPU prediction is the same before and after a CPU calibration was fitted, stored and used.
    gpu = Scenario(model="DeepSeek-R1-Distill-Llama-8B", gpu="H200", num_requests=200, workload="fixed:1024,2048")
    before = predict(gpu).summary
    predict(cases[0].scenario, cases[0].lengths, restored)
    after = predict(gpu, calibration=calibration_for(Store(copy), gpu_meta)).summary
    assert before == after and after["calibration"] == "defaults"


def test_validate_cli_prints_the_documented_shape(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "cli.duckdb"
    copy.write_bytes(db.read_bytes())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "validate",
            "--db",
            str(copy),
            "--runs",
            "syn-b1",
            "syn-b8",
            "syn-b32",
            "--folds",
            "3",
            "--json",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert [r["run_id"] for r in report["runs"]] == ["syn-b1", "syn-b32", "syn-b8"]
    summary = report["summary"]
    for key in (
        "held_out_runs",
        "kv_capacity_err_max",
        "cliff_onset_err_median",
        "completion_err_median",
        "ttft_mape",
        "tpot_mape",
        "e2e_mape",
    ):
        assert key in summary
    assert summary["held_out_runs"] == 3 and summary["kv_capacity_err_max"] == 0.0
    bad = subprocess.run(
        [sys.executable, "-m", "engine", "validate", "--db", str(copy), "--runs", "nope"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_validate_on_an_empty_database_says_how_to_import_runs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.duckdb"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "engine", "validate", "--db", str(empty), "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["summary"]["held_out_runs"] == 0
    assert f"python -m engine import data/runs --db {empty}" in out.stderr


def test_calibrate_cli_exports_fits_another_database_of_the_same_runs_loads(db: Path, tmp_path: Path) -> None:
    fitted_db, fresh_db = tmp_path / "fitted.duckdb", tmp_path / "fresh.duckdb"
    fitted_db.write_bytes(db.read_bytes())
    fresh_db.write_bytes(db.read_bytes())
    export = tmp_path / "calibrations.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = ["syn-b1", "syn-b8", "syn-b32"]
    args = [sys.executable, "-m", "engine", "calibrate", "--db", str(fitted_db), "--runs", *runs, "--json"]
    out = subprocess.run([*args, "--export", str(export)], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=240)  # fmt: skip
    assert out.returncode == 0, out.stderr
    stored = json.loads(out.stdout)["calibrations"]
    shipped = json.loads(export.read_text())
    assert shipped["cliffscope_calibrations"] == 1 and len(shipped["calibrations"]) == len(stored) == 1
    record = shipped["calibrations"][0]
    assert record["calibration_id"] == stored[0]["calibration_id"]  # the id is the content's, in every database
    assert sorted(record["run_content_sha256"]) == sorted(runs)
    with Store(fresh_db) as fresh:
        assert fresh.calibrations().height == 0
        notes = fresh.import_calibrations(export, origin="copied from another database")
        assert len(notes) == 1 and ": loaded," in notes[0]
        loaded = fresh.calibration(record["calibration_id"])
        assert loaded["params"] == stored[0]["params"] and loaded["origin"] == "copied from another database"
    missing = subprocess.run([*args, "--dry-run", "--export", str(tmp_path / "no" / "such" / "dir.json")], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert missing.returncode == 2 and "--export" in missing.stderr


def test_a_gpu_calibration_never_changes_a_cpu_prediction(db: Path, tmp_path: Path) -> None:
    from engine.fidelity.published_fit import load_records, paper_case

    copy = tmp_path / "gpu.duckdb"
    copy.write_bytes(db.read_bytes())
    paper = {r.id: r for r in load_records(kind="paper")}
    gpu_cases = [paper_case(paper[i]) for i in ("paper-v-b-32b-dp8", "paper-v-b-32b-tp8")]
    with Store(copy) as store:
        cases, _ = load_cases(store)
        cpu = cases[0]
        before_cal = calibration_for(store, cpu.meta)
        before = predict(cpu.scenario, cpu.lengths, before_cal).summary
        result = fit(gpu_cases, params=["mem_efficiency", "step_overhead_s"], max_evals=40)
        assert result.group == ("H200", "published V1")
        store.save_calibration(result.as_record())
        assert store.calibrations().height == 1
        after_cal = calibration_for(store, cpu.meta)
        after = predict(cpu.scenario, cpu.lengths, after_cal).summary
    assert after_cal == before_cal and after == before
    # And the GPU fit's own group gets it: the calibration is stored under the GPU's key only.
    assert calibration_from_record(result.as_record()).mem_efficiency == pytest.approx(result.fitted["mem_efficiency"])
