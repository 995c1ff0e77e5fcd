"""Compressed inputs (.gz, .zst, .zip of text formats) into a real DuckDB file: same runs as the plain file, bombs
and broken archives refused with the limit or the member named, nothing written."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import zstandard

from engine.formats import Limits
from engine.formats.accepted import UPLOAD_SUFFIXES, refusal
from engine.store import Store, ValidationError
from tests.support.paths import TOOL_FILES

FIXTURES = TOOL_FILES
SCRAPES = (FIXTURES / "vllm-0.32-cpu-metrics-scrapes.prom").read_bytes()
BENCH = (FIXTURES / "vllm-0.32-bench-serve-detailed.json").read_bytes()
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "c.duckdb", limits=Limits(max_decompressed_bytes=4 * 1024**2)) as opened:
        yield opened


def _zip(members: dict[str, bytes]) -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, blob in members.items():
            archive.writestr(name, blob)
    return sink.getvalue()


def _plain_runs(store: Store, data: bytes, name: str) -> list[tuple[str, dict[str, int]]]:
    report = store.ingest_bytes(data, name)
    out = [(r.run_id, r.rows) for r in report.runs]
    for run in report.runs:
        store.delete_run(run.run_id)
    return out


@pytest.mark.parametrize(
    ("name", "pack"),
    [
        ("metrics.prom.gz", gzip.compress),
        ("metrics.prom.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("metrics.zip", lambda b: _zip({"scrapes/metrics.prom": b})),
    ],
)
def test_compressed_scrape_is_the_same_run_as_the_plain_one(store: Store, name: str, pack) -> None:
    expected = _plain_runs(store, SCRAPES, "metrics.prom")
    assert expected and expected[0][1]["engine_samples"] > 0
    report = store.ingest_bytes(pack(SCRAPES), name)
    assert [(r.run_id, r.rows) for r in report.runs] == expected


def test_zip_of_several_files_lands_every_run_in_one_go(store: Store) -> None:
    report = store.ingest_bytes(_zip({"bench.json": BENCH, "metrics.prom": SCRAPES, "__MACOSX/._x": b"\0"}), "a.zip")
    tables = sorted(table for r in report.runs for table, n in r.rows.items() if n)
    assert tables == ["engine_samples", "requests"]


def test_multi_frame_zstd_and_multi_member_gzip_are_read_whole(store: Store) -> None:
    half = len(SCRAPES) // 2
    cut = SCRAPES.rindex(b"\n", 0, half) + 1
    expected = _plain_runs(store, SCRAPES, "metrics.prom")
    zstd = zstandard.ZstdCompressor().compress(SCRAPES[:cut]) + zstandard.ZstdCompressor().compress(SCRAPES[cut:])
    assert [(r.run_id, r.rows) for r in store.ingest_bytes(zstd, "m.prom.zst").runs] == expected
    store.delete_run(expected[0][0])
    both = gzip.compress(SCRAPES[:cut]) + gzip.compress(SCRAPES[cut:])
    assert [(r.run_id, r.rows) for r in store.ingest_bytes(both, "m.prom.gz").runs] == expected


def _bomb(kind: str, size: int) -> bytes:
    if kind == "gzip":
        return gzip.compress(b"0" * size, compresslevel=9)
    return zstandard.ZstdCompressor(level=3).compress(b"0" * size)


@pytest.mark.parametrize("kind", ["gzip", "zstd", "zip"])
def test_a_decompression_bomb_is_refused_naming_the_limit(store: Store, kind: str) -> None:
    size = 64 * 1024**2  # 16 x the store's 4 MiB limit; the archive itself is tiny
    data = _zip({"m.csv": b"0" * size}) if kind == "zip" else _bomb(kind, size)
    assert len(data) < 200_000
    before = store.table_counts()
    with pytest.raises(ValidationError, match=r"4,194,304 bytes \(the max_decompressed_bytes limit\)"):
        store.ingest_bytes(data, f"bomb.{ {'gzip': 'csv.gz', 'zstd': 'csv.zst', 'zip': 'zip'}[kind] }")
    assert store.table_counts() == before


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (gzip.compress(SCRAPES)[:-40], "m.prom.gz", "not a complete gzip file"),
        (zstandard.ZstdCompressor().compress(SCRAPES)[:-40], "m.prom.zst", "not a complete zstandard file"),
        (_zip({"metrics.prom": SCRAPES})[:-30], "m.zip", "not a readable zip archive"),
        (_zip({"notes.docx": b"hello"}), "m.zip", "m.zip/notes.docx: .docx is not a format cliffscope reads"),
        (_zip({"m.prom.gz": gzip.compress(SCRAPES)}), "m.zip", "m.zip/m.prom.gz: an archive or compressed file"),
        (gzip.compress(gzip.compress(SCRAPES)), "m.prom.gz.gz", "a gzip archive inside an archive"),
        (_zip({"a.csv": "t_s,running\n0,1\n".encode("utf-16")}), "m.zip", "m.zip/a.csv: not UTF-8 text"),
        (_zip({}), "empty.zip", "the archive holds no files"),
    ],
)
def test_broken_archives_name_the_file_or_member(store: Store, data: bytes, name: str, message: str) -> None:
    before = store.table_counts()
    with pytest.raises(ValidationError) as caught:
        store.ingest_bytes(data, name)
    assert message in str(caught.value)
    assert store.table_counts() == before


def test_cli_imports_a_gzipped_scrape(tmp_path: Path) -> None:
    path = tmp_path / "metrics.prom.gz"
    path.write_bytes(gzip.compress(SCRAPES))
    result = subprocess.run(
        [sys.executable, "-m", "engine", "import", str(path), "--db", str(tmp_path / "cli.duckdb")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "metrics.prom.gz: prom-" in result.stdout and "engine_samples" in result.stdout


def test_upload_names_are_checked_by_us_not_by_the_widget() -> None:
    assert {".gz", ".zst", ".zip", ".prom", ".json"} <= set(UPLOAD_SUFFIXES)
    assert refusal("metrics.prom.gz") is None
    message = refusal("report.xlsx")
    assert message is not None and "'.xlsx'" in message and ".gz" in message
    assert "no extension" in (refusal("metrics") or "")
