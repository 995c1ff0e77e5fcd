"""The whole starter set of published records through the real CLI into a real DuckDB file, and back.

`python -m engine import data/published` must land every record in one go, list them as `published` with their
source, keep each record's text verbatim (it re-parses to the same typed record), and leave nothing behind when a
run is deleted. The Upload page's path (bytes with a file name) accepts a record too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine.formats.published import parse_record, published_files, record_from_text
from engine.store import Store

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO / "data" / "published"


def _engine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_starter_set_round_trips_through_the_cli(tmp_path: Path) -> None:
    db = tmp_path / "published.duckdb"
    files = published_files(PUBLISHED)
    first = _engine("import", str(PUBLISHED), "--db", str(db), "--json")
    assert first.returncode == 0, first.stderr
    landed = json.loads(first.stdout)["landed"]
    assert len(landed) == len(files) and not json.loads(first.stdout)["rejected"]
    assert {run["action"] for report in landed for run in report["runs"]} == {"added"}

    again = _engine("import", str(PUBLISHED), "--db", str(db), "--json")
    assert {run["action"] for report in json.loads(again.stdout)["landed"] for run in report["runs"]} == {"unchanged"}

    listed = _engine("runs", "--db", str(db), "--source", "published", "--json")
    rows = json.loads(listed.stdout)["runs"]
    assert len(rows) == len(files)
    records = {path.stem: parse_record(path.read_bytes(), path.name) for path in files}
    for row in rows:
        record = records[row["run_id"]]
        assert row["source"] == "published" and row["source_ref"] == record.source.reference
        dp, tp, pp = record.layout
        assert row["layout"] == f"DP{dp}·TP{tp}·PP{pp}" and row["device"] == record.gpu

    table = _engine("runs", "--db", str(db), "--source", "published")
    assert "source_ref" in table.stdout.splitlines()[0] and "https://arxiv.org/abs/2605.19775" in table.stdout

    with Store(db) as store:
        for run_id, record in records.items():
            stored = store.published_record(run_id)
            assert stored is not None and stored["kind"] == record.kind.value
            assert record_from_text(stored["record_toml"]) == record
            assert stored["figures"] == dict(record.figures)
            assert stored["server_unstated"] == list(record.server.unstated)
            meta = store.run_meta(run_id)
            assert meta["source"] == "published" and meta["model_config"]["architectures"]
            if record.figure("kv_cache_tokens") is not None:
                assert meta["kv_capacity_tokens"] == record.figure("kv_cache_tokens")
        assert store.published_runs("paper").height == sum(r.kind.value == "paper" for r in records.values())
        victim = next(iter(records))
        store.delete_run(victim)
        assert store.published_record(victim) is None and store.run_meta(victim) is None


def test_an_uploaded_record_lands_like_a_file(tmp_path: Path) -> None:
    path = PUBLISHED / "paper" / "paper-v-c-r1-pp4-tp2.toml"
    with Store(tmp_path / "upload.duckdb") as store:
        report = store.ingest_bytes(path.read_bytes(), path.name)
        assert report.ok and report.runs[0].run_id == "paper-v-c-r1-pp4-tp2"
        runs = store.runs(source="published")
        assert runs["source_ref"].to_list() == ["https://arxiv.org/abs/2605.19775"]
        assert runs["layout"].to_list() == ["DP1·TP2·PP4"]
