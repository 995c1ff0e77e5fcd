"""Schema 2 -> 3 on a real DuckDB file: the calibrations table a v2 cliffscope created on first save becomes part of
the schema (with ``origin``), in one transaction, keeping every run and calibration it held."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from engine.formats import DEFAULT_LIMITS, read_path, validate_run
from engine.store import SCHEMA_VERSION, Store, StoreError, open_store, schema
from engine.store.ingest import write_runs
from engine.store.rollup import ROLLUP_DDL
from engine.store.schema import V2_CALIBRATION_ORIGIN, V2_CALIBRATIONS_DDL, v1_ddl
from tests.support.run_bundles import make_bundle

V2_CALIBRATION = (
    "cal-v2fit00000",
    "cpu-test-1t",
    "0.32.0",
    "2026-11-20 10:00:00",
    "nm-log-1",
    json.dumps(["v2-run"]),
    json.dumps({"mem_efficiency": 0.7, "step_overhead_s": 0.002}),
    json.dumps(["mem_efficiency"]),
    0.5,
    2.0,
    120,
    json.dumps({"v2-run": {"completion_s": 0.01}}),
    "fit on 1 run(s) of cpu-test-1t / vLLM 0.32.0 at 2026-11-20T10:00:00+00:00",
)


def v2_file(path: Path, bundle: Path, *, with_calibrations: bool = True) -> None:
    """A database as cliffscope wrote it at schema 2: v2 tables, one ingested run, a lazily created calibrations
    table with one fit."""
    con = duckdb.connect(str(path))
    for statement in (*v1_ddl(), ROLLUP_DDL):
        con.execute(statement)
    con.execute("INSERT INTO schema_version VALUES (2, 'cliffscope', now()::TIMESTAMP)")
    write_runs(con, [validate_run(run, DEFAULT_LIMITS) for run in read_path(bundle, DEFAULT_LIMITS)], replace=False)
    if with_calibrations:
        con.execute(V2_CALIBRATIONS_DDL)
        con.execute(f"INSERT INTO calibrations VALUES ({', '.join('?' for _ in V2_CALIBRATION)})", V2_CALIBRATION)
    con.close()


def test_a_v2_file_migrates_to_3_keeping_its_runs_and_calibrations(tmp_path: Path) -> None:
    path = tmp_path / "v2.duckdb"
    v2_file(path, make_bundle(tmp_path / "bundles", "v2-run"))
    with Store(path) as store:
        assert (store.schema_found, store.schema_version) == (2, SCHEMA_VERSION) == (2, 4)
        assert store.table_counts()["runs"] == 1
        assert store.timeline("v2-run").height > 0
        record = store.calibration("cal-v2fit00000")
        assert record is not None
        assert record["params"] == {"mem_efficiency": 0.7, "step_overhead_s": 0.002}
        assert record["run_ids"] == ["v2-run"] and record["evaluations"] == 120
        assert record["origin"] == V2_CALIBRATION_ORIGIN
        assert store.latest_calibration("cpu-test-1t", "0.32.0")["calibration_id"] == "cal-v2fit00000"
    with Store(path) as store:  # already current: nothing migrates twice
        assert store.schema_found == SCHEMA_VERSION == 4
        assert store.calibrations().height == 1


def test_a_v2_file_that_never_saved_a_calibration_gets_the_table(tmp_path: Path) -> None:
    path = tmp_path / "v2-plain.duckdb"
    v2_file(path, make_bundle(tmp_path / "bundles", "v2-run"), with_calibrations=False)
    with Store(path) as store:
        assert store.schema_found == 2
        assert store.calibrations().height == 0
        assert "origin" in store.calibrations().columns


def test_the_migration_is_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the 2 -> 3 step has done its work leaves the file exactly at v2."""
    path = tmp_path / "v2.duckdb"
    v2_file(path, make_bundle(tmp_path / "bundles", "v2-run"))
    real_step = schema.MIGRATIONS[2]

    def step_then_fail(con: duckdb.DuckDBPyConnection) -> None:
        real_step(con)
        raise OSError("disk full (injected after the migration step ran)")

    monkeypatch.setitem(schema.MIGRATIONS, 2, step_then_fail)
    with pytest.raises(OSError, match="injected"):
        Store(path)
    con = duckdb.connect(str(path))
    assert con.execute("SELECT max(version) FROM schema_version").fetchall() == [(2,)]
    columns = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = "
                                         "'calibrations' ORDER BY ordinal_position").fetchall()]  # fmt: skip
    assert "origin" not in columns and len(columns) == len(V2_CALIBRATION)
    assert con.execute("SELECT calibration_id FROM calibrations").fetchall() == [("cal-v2fit00000",)]
    assert con.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]
    con.close()
    monkeypatch.setitem(schema.MIGRATIONS, 2, real_step)
    with Store(path) as store:
        assert store.schema_found == 2 and store.calibration("cal-v2fit00000")["origin"] == V2_CALIBRATION_ORIGIN


def test_a_calibrations_table_of_another_shape_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "odd.duckdb"
    v2_file(path, make_bundle(tmp_path / "bundles", "v2-run"), with_calibrations=False)
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE calibrations (calibration_id VARCHAR, note VARCHAR)")
    con.close()
    with pytest.raises(StoreError, match="calibrations table has columns"):
        Store(path)
    con = duckdb.connect(str(path))
    assert con.execute("SELECT max(version) FROM schema_version").fetchall() == [(2,)]
    con.close()


def test_an_upgraded_default_database_gets_the_shipped_calibrations_of_the_runs_it_holds(tmp_path: Path) -> None:
    """A default database from before v3 that holds every run of one shipped calibration gets that calibration when it
    is migrated (and only that one: the other group's runs are absent)."""
    runs = Path(__file__).resolve().parents[2] / "data" / "runs"
    shipped = json.loads((runs / "calibrations.json").read_text())["calibrations"]
    smallest = min(shipped, key=lambda c: len(c["run_ids"]))
    path = tmp_path / "old-default.duckdb"
    con = duckdb.connect(str(path))
    for statement in (*v1_ddl(), ROLLUP_DDL):
        con.execute(statement)
    con.execute("INSERT INTO schema_version VALUES (2, 'cliffscope', now()::TIMESTAMP)")
    parsed = [
        validate_run(run, DEFAULT_LIMITS) for r in smallest["run_ids"] for run in read_path(runs / r, DEFAULT_LIMITS)
    ]
    write_runs(con, parsed, replace=False)
    con.close()
    with open_store(path, seed_dir=runs) as store:
        assert store.schema_found == 2 and store.seed_reports == []  # not created: no runs seeded
        assert store.calibrations()["calibration_id"].to_list() == [smallest["calibration_id"]]
        assert any("absent or differ" in n for n in store.seed_calibration_notes) == (len(shipped) > 1)
    with open_store(path, seed_dir=runs) as store:  # current now: nothing is loaded again
        assert store.seed_calibration_notes == [] and store.calibrations().height == 1
