"""``python -m engine import`` and ``runs`` as a user runs them: a real process, a real database file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.store import Store
from tests.support.run_bundles import make_bundle
from tests.support.tool_outputs import bench_result

REPO = Path(__file__).resolve().parents[2]


def _engine(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=None if env is None else os.environ | env,
    )


def test_import_then_runs(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.duckdb")
    bundle = make_bundle(tmp_path / "in", "cli-1")
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(bench_result(n=8)))
    bad = tmp_path / "bad.csv"
    bad.write_text("t_s,running\n0,1\n-1,2\n")
    worse = tmp_path / "worse.parquet"
    worse.write_bytes(b"PAR1 not really")

    result = _engine("import", str(bundle), str(bench), str(bad), str(worse), "--db", db, "--meta", "device=cpu")
    assert result.returncode == 2
    rejected = result.stderr.strip().splitlines()
    assert len(rejected) == 2
    assert rejected[0].startswith("rejected: bad.csv, row 2, column 't_s'") and "fix:" in rejected[0]
    assert rejected[1].startswith("rejected: worse.parquet")
    assert "cli-1: added" in result.stdout

    again = _engine("import", str(bundle), "--db", db)
    assert again.returncode == 0 and "unchanged" in again.stdout

    listed = _engine("runs", "--db", db, "--json")
    assert listed.returncode == 0
    runs = {r["run_id"]: r for r in json.loads(listed.stdout)["runs"]}
    assert runs["cli-1"]["layout"] == "DP1·TP1·PP1" and runs["cli-1"]["requests_rows"] == 32
    bench_run = next(r for r in runs.values() if r["source"] == "upload")
    assert bench_run["device"] == "cpu" and bench_run["requests_rows"] == 8

    filtered = _engine("runs", "--db", db, "--json", "--source", "collector")
    assert [r["run_id"] for r in json.loads(filtered.stdout)["runs"]] == ["cli-1"]

    make_bundle(tmp_path / "in", "cli-2")  # a folder of bundles stands for the bundles in it
    folder = _engine("import", str(tmp_path / "in"), "--db", db)
    assert folder.returncode == 0 and "cli-1: already in the store" in folder.stdout and "cli-2: added" in folder.stdout


def test_bad_flags_and_foreign_db_are_one_line_errors(tmp_path: Path) -> None:
    result = _engine("import", str(tmp_path / "x.csv"), "--db", str(tmp_path / "a.duckdb"), "--meta", "tp=two")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "whole number" in result.stderr
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_text("not a database")
    result = _engine("runs", "--db", str(garbage))
    assert result.returncode == 2 and "not a cliffscope database" in result.stderr
    assert garbage.read_text() == "not a database"


def test_a_database_held_for_good_is_a_clear_error_after_a_bounded_wait(tmp_path: Path) -> None:
    """A process that holds the file read-write and never lets go (an unshared Store, e.g. a script): the CLI waits
    the bounded time (here 1 s) and then says so in one line. The dashboard itself opens the store shared and no
    longer does this (tests/integration/test_store_processes.py)."""
    db = tmp_path / "held.duckdb"
    with Store(db):
        result = _engine("runs", "--db", str(db), env={"CLIFFSCOPE_DB_LOCK_WAIT_S": "1"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "kept the database locked for longer than 1 s" in result.stderr
