"""The store on a real DuckDB file: bundles in, queries out, idempotent re-ingest, migration, bad files refused."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from engine.store import SCHEMA_VERSION, SUMMARY_KEYS, Store, StoreError, ValidationError, open_store
from engine.store.schema import V0_DDL
from tests.support.run_bundles import make_bundle, run_tables


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "test.duckdb") as opened:
        yield opened


def test_bundle_round_trip(store: Store, tmp_path: Path) -> None:
    tables = run_tables(num_requests=16, num_samples=120, gpus=2)
    bundle = make_bundle(tmp_path / "inbox", "rt-1", tables=tables)
    report = store.ingest(bundle)
    assert report.ok and report.runs[0].action == "added"
    assert report.runs[0].rows == {"engine_samples": 120, "requests": 16, "gpu_samples": 240}

    meta = store.run_meta("rt-1")
    written = json.loads((bundle / "run.json").read_text())
    for key, value in written.items():
        assert meta[key] == value, key
    assert meta["_store"]["origin"] == "bundle"

    samples = store.engine_samples("rt-1")
    assert samples["t_s"].to_list() == pytest.approx(tables["engine_samples"]["t_s"].to_pylist())
    assert samples["preemptions_total"].to_list() == tables["engine_samples"]["preemptions_total"].to_pylist()
    requests = store.requests("rt-1")
    assert sorted(requests["request_id"].to_list()) == sorted(tables["requests"]["request_id"].to_pylist())
    assert store.request_lengths("rt-1").shape == (16, 2)
    assert store.gpu_timeline("rt-1", 1000)["gpu_index"].n_unique() == 2


def test_measured_summary_matches_definitions(store: Store, tmp_path: Path) -> None:
    tables = run_tables(num_requests=40, num_samples=300, seed=3)
    store.ingest(make_bundle(tmp_path, "sum-1", tables=tables))
    summary = store.measured_summary("sum-1")
    assert summary is not None and tuple(summary) == SUMMARY_KEYS
    req = tables["requests"].to_pydict()
    arrival, first = np.array(req["arrival_s"]), np.array(req["first_token_s"])
    finished, out = np.array(req["finished_s"]), np.array(req["output_tokens"])
    ttft, e2e = first - arrival, finished - arrival
    tpot = (finished - first) / (out - 1)
    assert summary["ttft_mean_s"] == pytest.approx(ttft.mean())
    assert summary["ttft_p99_s"] == pytest.approx(np.percentile(ttft, 99))
    assert summary["tpot_p50_s"] == pytest.approx(np.percentile(tpot, 50))
    assert summary["e2e_p50_s"] == pytest.approx(np.percentile(e2e, 50))
    assert summary["queue_mean_s"] == pytest.approx((np.array(req["first_scheduled_s"]) - arrival).mean())
    assert summary["completion_s"] == pytest.approx(finished.max())
    samples = tables["engine_samples"].to_pydict()
    preempt = np.array(samples["preemptions_total"])
    assert summary["preemptions"] == preempt[-1] - preempt[0]
    assert summary["cliff_onset_s"] == pytest.approx(np.array(samples["t_s"])[np.argmax(preempt > preempt[0])])
    assert summary["peak_running"] == max(samples["running"])
    assert summary["peak_kv_usage"] == pytest.approx(max(samples["kv_usage"]))
    assert summary["generated_tokens"] == out.sum()
    assert summary["generation_tokens_per_s"] == pytest.approx(out.sum() / finished.max())
    assert summary["bound_regime"] is None
    assert summary["kv_capacity_tokens"] == 8192


def test_reingest_is_idempotent_and_conflicts_are_refused(store: Store, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "a", "same-1")
    store.ingest(bundle)
    before = store.table_counts()
    again = store.ingest(bundle)
    assert again.runs[0].action == "unchanged" and "unchanged" in again.summary()
    assert store.table_counts() == before

    other = make_bundle(tmp_path / "b", "same-1", tables=run_tables(num_requests=8, seed=9))
    with pytest.raises(ValidationError, match="already in the store with different content"):
        store.ingest(other)
    assert store.table_counts() == before
    replaced = store.ingest(other, replace=True)
    assert replaced.runs[0].action == "replaced"
    assert store.table_counts()["requests"] == 8


def test_zip_bundle_and_delete(store: Store, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "inbox", "zip-1")
    archive = tmp_path / "zip-1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in bundle.iterdir():
            zf.write(file, f"zip-1/{file.name}")
    assert store.ingest(archive).runs[0].action == "added"
    assert store.delete_run("zip-1") is True
    assert store.delete_run("zip-1") is False
    assert store.table_counts() == {"runs": 0, "engine_samples": 0, "requests": 0, "gpu_samples": 0}


def test_timeline_downsamples_in_sql_and_keeps_peaks(store: Store, tmp_path: Path) -> None:
    tables = run_tables(num_samples=20_000, seed=1)
    samples = tables["engine_samples"].to_pydict()
    spike = 12_345
    samples["running"][spike] = 63  # a one-sample peak that naive decimation would miss
    tables["engine_samples"] = pa.table(samples, schema=tables["engine_samples"].schema)
    store.ingest(make_bundle(tmp_path, "big-1", tables=tables))
    frame = store.timeline("big-1", max_points=200)
    counts = dict(frame.group_by("series").len().iter_rows())
    assert max(counts.values()) <= 200
    running = frame.filter(series="running")
    assert running["value"].max() == 63
    assert running.filter(value=63)["t_s"].to_list() == [pytest.approx(samples["t_s"][spike])]
    rates = frame.filter(series="generation_tokens_per_s")["value"]
    gen = samples["generation_tokens_total"]
    assert rates.mean() == pytest.approx((gen[-1] - gen[0]) / samples["t_s"][-1], rel=0.05)


def test_runs_list_filters_and_aligned_timelines(store: Store, tmp_path: Path) -> None:
    store.ingest(make_bundle(tmp_path, "f-1", model_name="m-a", device="cpu", dp=1, tp=1, pp=1))
    store.ingest(make_bundle(tmp_path, "f-2", model_name="m-b", device="NVIDIA H200", num_devices=2, tp=2))
    assert store.runs()["run_id"].to_list() == ["f-1", "f-2"]
    assert store.runs(model="m-b")["run_id"].to_list() == ["f-2"]
    assert store.runs(layout="DP1·TP2·PP1")["run_id"].to_list() == ["f-2"]
    assert store.runs(layout=(1, 1, 1), device="cpu")["run_id"].to_list() == ["f-1"]
    assert store.runs(status="failed").is_empty()
    assert store.runs(model="x' OR '1'='1").is_empty()
    both = store.timelines(["f-1", "f-2"], max_points=100, align="cliff")
    assert set(both["run_id"].unique()) == {"f-1", "f-2"}
    preempt = both.filter(run_id="f-1", series="preemptions_total")
    before_cliff = preempt.filter(preempt["t_s"] < 0)["value"]
    assert before_cliff.len() > 0 and before_cliff.max() == preempt["value"].min()
    assert preempt.filter(preempt["t_s"] >= 0)["value"].max() > preempt["value"].min()


def test_migrates_a_v0_file_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    for statement in V0_DDL:
        con.execute(statement)
    con.execute(
        "INSERT INTO runs VALUES ('old-1', 'old run', 'collector', '2026-01-01T00:00:00Z', 'complete', 'h', 'cpu', 1,"
        " 'tiny', 'bfloat16', 1, 1, 1, 32, 2048, 128, NULL, 8192, 2, 'fixed:8,8', '0.30.0', NULL)"
    )
    con.execute(
        "INSERT INTO engine_samples VALUES ('old-1', 0.0, 1, 1, 0.5, 8, 0, 0), ('old-1', 1.0, 2, 0, 0.9, 16, 8, 1)"
    )
    con.execute(
        "INSERT INTO requests VALUES ('old-1', 'r0', 8, 8, 0.0, 0.1, 0.2, 1.0, 0),"
        " ('old-1', 'r1', 8, 8, 0.0, 0.1, 0.3, 1.2, 1)"
    )
    con.execute("INSERT INTO gpu_samples VALUES ('old-1', 0.0, 0, 0.5, 0.4, 1000, 300.0)")
    con.close()

    with Store(path) as store:
        assert (store.schema_found, store.schema_version) == (0, SCHEMA_VERSION)
        assert store.table_counts() == {"runs": 1, "engine_samples": 2, "requests": 2, "gpu_samples": 1}
        meta = store.run_meta("old-1")
        assert meta["model_name"] == "tiny" and meta["model_config"] is None
        assert "model_config" in meta["_store"]["missing_fields"]
        summary = store.measured_summary("old-1")
        assert summary["generated_tokens"] == 16 and summary["preemptions"] == 1
        assert store.requests("old-1")["tpot_s"].to_list() == pytest.approx([0.8 / 7, 0.9 / 7])
        timeline = store.timeline("old-1")  # the v2 rollup was built from v0's samples
        assert timeline.filter(series="kv_usage")["value"].to_list() == [0.5, 0.9]
        store.ingest(make_bundle(tmp_path / "new", "new-1"))
    with Store(path) as store:  # opening again: already current, nothing migrates twice
        assert store.schema_found == SCHEMA_VERSION
        assert store.table_counts()["runs"] == 2


def test_corrupt_and_foreign_files_are_refused_untouched(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"definitely not a database\n" * 10)
    with pytest.raises(StoreError, match="not a cliffscope database"):
        Store(garbage)
    assert garbage.read_bytes() == b"definitely not a database\n" * 10

    foreign = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE invoices (id INTEGER, amount DOUBLE)")
    con.execute("INSERT INTO invoices VALUES (1, 9.5)")
    con.close()
    with pytest.raises(StoreError, match="invoices"):
        Store(foreign)
    con = duckdb.connect(str(foreign))
    assert con.execute("SELECT count(*) FROM invoices").fetchall() == [(1,)]
    con.close()


def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (99, 'cliffscope', now()::TIMESTAMP)")
    con.close()
    with pytest.raises(StoreError, match="newer cliffscope"):
        Store(path)
    con = duckdb.connect(str(path))
    assert con.execute("SELECT max(version) FROM schema_version").fetchall() == [(99,)]
    con.close()


def test_open_default_seeds_bundled_runs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = tmp_path / "runs"
    make_bundle(seed, "seed-1")
    make_bundle(seed, "seed-2")
    (seed / "not-a-bundle.txt").write_text("ignored")
    db = tmp_path / "data" / "cliffscope.duckdb"
    monkeypatch.setenv("CLIFFSCOPE_DB", str(db))
    with open_store(seed_dir=seed) as store:
        assert [r.ok for r in store.seed_reports] == [True, True]
        assert store.runs()["run_id"].to_list() == ["seed-1", "seed-2"]
        store.delete_run("seed-2")
    with open_store(seed_dir=seed) as store:  # not first creation: no re-seeding
        assert store.seed_reports == [] and store.runs()["run_id"].to_list() == ["seed-1"]


def test_inbox_moves_bundles_to_done_or_rejected(store: Store, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    make_bundle(inbox, "in-1")
    bad = make_bundle(inbox, "in-2")
    (bad / "requests.parquet").write_bytes(b"PAR1 truncated")
    (inbox / ".tmp-in-3-abcd").mkdir()  # a collector still writing
    reports = store.ingest_inbox(inbox)
    assert sorted((r.file, r.ok) for r in reports) == [("in-1", True), ("in-2", False)]
    assert (inbox / "done" / "in-1" / "run.json").is_file()
    reason = (inbox / "rejected" / "in-2.reason.txt").read_text()
    assert "requests.parquet" in reason and "fix:" in reason
    assert (inbox / ".tmp-in-3-abcd").is_dir()
    assert store.runs()["run_id"].to_list() == ["in-1"]
    shutil.rmtree(inbox / "done")
