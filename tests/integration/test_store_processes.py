"""One store, many processes: the dashboard server running (serve.py, as `make run` starts it) with its inbox
watcher, eight reader processes, a CLI import and bundles landing in the inbox, all on one DuckDB file at once.
Nothing lost, no lock error shown to anyone, and the time from a bundle landing to the run being listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.bundle import write_bundle
from engine.store import Store
from tests.support.dashboard import ARTIFACTS, dashboard_server
from tests.support.run_bundles import make_bundle, run_meta, run_tables

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
READERS = 8
READ_SECONDS = 20.0


def engine_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def listed_runs(db: Path) -> set[str]:
    result = engine_cli("runs", "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    return {r["run_id"] for r in json.loads(result.stdout)["runs"]}


def test_dashboard_readers_import_and_inbox_at_once(tmp_path: Path) -> None:
    db, inbox = tmp_path / "team.duckdb", tmp_path / "inbox"
    inbox.mkdir()
    with Store(db, shared=True) as store:  # a few runs to read before anything lands
        for i in range(3):
            store.ingest(make_bundle(tmp_path / "seed", f"seed-{i}", tables=run_tables(num_samples=2000, seed=i)))
    env = {"CLIFFSCOPE_INBOX": str(inbox), "CLIFFSCOPE_INBOX_POLL_S": "1"}
    with dashboard_server(db, env=env) as base:
        readers = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.support.store_reader", str(db), str(READ_SECONDS), str(i)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(READERS)
        ]
        for proc in readers:  # every reader has imported, opened the store and is reading
            assert proc.stdout is not None and proc.stdout.readline().strip() == "reading"
        imported = engine_cli("import", str(make_bundle(tmp_path / "cli", "cli-import")), "--db", str(db))
        visible_after = {}
        with Store(db, shared=True) as watcher:  # one more reader process's view: when each run became visible
            for i in range(3):
                run_id = f"inbox-{i}"
                write_bundle(inbox, run_meta(run_id), run_tables(num_samples=3000, seed=10 + i))  # atomic rename
                landed = time.monotonic()
                while time.monotonic() - landed < 60:
                    if run_id in set(watcher.runs()["run_id"].to_list()):
                        visible_after[run_id] = round(time.monotonic() - landed, 2)
                        break
                    time.sleep(0.2)
        results = [json.loads(proc.communicate(timeout=300)[0].strip().splitlines()[-1]) for proc in readers]
        log = (ARTIFACTS / f"streamlit-{base.rsplit(':', 1)[1]}.log").read_text()

    assert imported.returncode == 0, imported.stderr
    assert all(not r["errors"] for r in results), [r["errors"] for r in results]
    assert all(r["reads"] >= 5 for r in results), results
    assert len(visible_after) == 3, f"the dashboard's watcher did not ingest the inbox: {sorted(os.listdir(inbox))}"
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["inbox-0", "inbox-1", "inbox-2"]
    final = listed_runs(db)
    assert final >= {"seed-0", "seed-1", "seed-2", "cli-import", "inbox-0", "inbox-1", "inbox-2"}
    assert "lock" not in log.lower() and "Traceback" not in log, log[-3000:]
    print(
        f"{READERS} readers: {sum(r['reads'] for r in results)} reads, 0 errors; "
        f"inbox landing -> listed: {sorted(visible_after.values())} s"
    )
