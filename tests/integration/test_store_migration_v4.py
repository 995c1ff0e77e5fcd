"""Schema 3 -> 4 on a real DuckDB file: the ``published`` table is added in one transaction, every run kept, and the
migrated file takes published records like a new one."""

from __future__ import annotations

from pathlib import Path

import duckdb

from engine.formats import DEFAULT_LIMITS, read_path, validate_run
from engine.store import SCHEMA_VERSION, Store
from engine.store.ingest import write_runs
from engine.store.rollup import ROLLUP_DDL
from engine.store.schema import CALIBRATIONS_DDL, table_names, v1_ddl
from tests.support.run_bundles import make_bundle

REPO = Path(__file__).resolve().parents[2]
RECORD = REPO / "data" / "published" / "paper" / "paper-v-c-405b-tp8.toml"


def v3_file(path: Path, bundle: Path) -> None:
    """A database as cliffscope wrote it at schema 3: v3 tables (no ``published``), one ingested run."""
    con = duckdb.connect(str(path))
    for statement in (*v1_ddl(), ROLLUP_DDL, CALIBRATIONS_DDL):
        con.execute(statement)
    con.execute("INSERT INTO schema_version VALUES (3, 'cliffscope', now()::TIMESTAMP)")
    runs = [validate_run(run, DEFAULT_LIMITS) for run in read_path(bundle, DEFAULT_LIMITS)]
    write_runs(con, runs, replace=False)
    con.close()


def test_a_v3_file_migrates_to_4_keeping_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "v3.duckdb"
    v3_file(path, make_bundle(tmp_path / "bundles", "v3-run"))
    with Store(path) as store:
        assert (store.schema_found, store.schema_version) == (3, SCHEMA_VERSION) == (3, 4)
        assert store.table_counts()["runs"] == 1 and store.timeline("v3-run").height > 0
        assert store.published_runs().height == 0
        assert store.runs()["source_ref"].to_list() == [None]
        assert store.ingest(RECORD).ok
        assert store.published_record("paper-v-c-405b-tp8")["figures"] == {"completion_s": 986}
    with Store(path) as store:  # already current: nothing migrates twice
        assert store.schema_found == 4 and store.table_counts()["runs"] == 2


def test_a_failed_migration_leaves_the_v3_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "v3-blocked.duckdb"
    v3_file(path, make_bundle(tmp_path / "bundles", "v3-run"))
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE published (run_id VARCHAR)")  # a table in the way: CREATE TABLE published fails
    con.close()
    try:
        Store(path).close()
    except Exception as exc:  # the store reports it; what matters is the file afterwards
        assert "published" in str(exc)
    con = duckdb.connect(str(path))
    assert con.execute("SELECT max(version) FROM schema_version").fetchall() == [(3,)]
    assert "runs" in table_names(con) and con.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]
    con.close()
