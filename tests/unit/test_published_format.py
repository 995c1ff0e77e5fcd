"""The published-record importer on real files: a good record parses; every bad one is refused naming the field.

Each case edits a copy of a committed record (data/published/) in a tmp directory and imports it into a real DuckDB
file, so the refusal is the importer's, not a helper's; a refused file writes nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.formats import ValidationError
from engine.formats.published import parse_record, published_files
from engine.formats.published_schema import RecordKind
from engine.store import Store

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO / "data" / "published"
BENCH = PUBLISHED / "bench" / "gpustack-r1-0528-h200-tp8-sharegpt.toml"
PAPER = PUBLISHED / "paper" / "paper-v-b-32b-dp4-tp2.toml"


def _edited(tmp_path: Path, source: Path, old: str, new: str, *, count: int = 1) -> Path:
    text = source.read_text()
    assert old in text, f"{old!r} not in {source.name}"
    target = tmp_path / source.name
    target.write_text(text.replace(old, new, count))
    return target


def _refusal(tmp_path: Path, path: Path) -> ValidationError:
    with Store(tmp_path / "store.duckdb") as store:
        with pytest.raises(ValidationError) as caught:
            store.ingest(path)
        assert store.table_counts()["runs"] == 0
        assert store.published_runs().height == 0
    return caught.value


def _columns(error: ValidationError) -> list[str | None]:
    return [problem.column for problem in error.problems]


def test_committed_records_parse_and_name_their_kind() -> None:
    files = published_files(PUBLISHED)
    assert len(files) >= 30
    kinds = {parse_record(path.read_bytes(), path.name).kind for path in files}
    assert {RecordKind.BENCH, RecordKind.PAPER} <= kinds


def test_a_good_record_is_typed() -> None:
    record = parse_record(BENCH.read_bytes(), BENCH.name)
    assert record.kind is RecordKind.BENCH and record.gpu == "H200" and record.layout == (1, 8, 1)
    assert record.figure("duration_s") == 76.59 and record.source.url.startswith("https://github.com/gpustack/")
    assert "gpu_memory_utilization" in record.server.unstated


@pytest.mark.parametrize(
    ("old", "new", "column", "words"),
    [
        ('url = "https://github.com/gpustack', 'homepage = "https://github.com/gpustack', "source.homepage", "unknown"),
        ("duration_s = 76.59", "duration_s = -76.59", "figures.duration_s", "negative"),
        ("request_throughput = 13.06", "request_throughput = 31.06", "figures.request_throughput", "counts give"),
        ("mean_ttft_ms = 17743.08", "mean_ttft_ms = 97743.08", "figures.mean_ttft_ms", "longer than the run"),
        ('gpu = "H200"', 'gpu = "H300"', "hardware.gpu", "unknown hardware"),
        ('name = "DeepSeek-R1"', 'name = "DeepSeek-R9"', "model.name", "unknown model folder"),
        ("tensor_parallel_size = 8", "tensor_paralel_size = 8", "server.tensor_paralel_size", "did you mean"),
        (
            'unstated = ["gpu_memory_utilization", ',
            "gpu_memory_utilization = 1.5\nunstated = [",
            None,
            "outside (0, 1]",
        ),
        ("num_gpus = 8", "num_gpus = 4", "hardware.num_gpus", "1 × 8 × 1"),
        ("completed = 1000", "completed = 1000\nkv_cache_tokens = 426288", "figures.kv_cache_tokens", "startup figure"),
        ("p99_itl_ms = 384.38", "p99_itl_ms = 385.38", "figures.p99_itl_ms", "not in any quote line"),
        ("completed = 1000", "completed = 100000000000000000000", "figures.completed", "beyond any real run"),
        ('id = "gpustack-r1-0528-h200-tp8-sharegpt"', 'id = "another-id"', "id", "file name"),
    ],
)
def test_a_bad_bench_record_is_refused_naming_the_field(
    tmp_path: Path, old: str, new: str, column: str | None, words: str
) -> None:
    error = _refusal(tmp_path, _edited(tmp_path, BENCH, old, new))
    if column is not None:
        assert column in _columns(error), str(error)
    assert any(words in f"{problem.message} {problem.fix}" for problem in error.problems), str(error)
    assert all(problem.fix for problem in error.problems)


def test_a_record_without_a_source_is_refused(tmp_path: Path) -> None:
    text = BENCH.read_text()
    text = re.sub(r"^url = .*\n", "", text, flags=re.MULTILINE)
    path = tmp_path / BENCH.name
    path.write_text(text)
    error = _refusal(tmp_path, path)
    assert "source.url" in _columns(error)
    assert "without a source" in str(error) and "citation" in error.problems[0].fix


def test_a_record_without_quote_lines_is_refused(tmp_path: Path) -> None:
    text = re.sub(r"^quote = \[\n(.*\n)*?\]\n", "quote = []\n", BENCH.read_text(), flags=re.MULTILINE)
    path = tmp_path / BENCH.name
    path.write_text(text)
    assert "source.quote" in _columns(_refusal(tmp_path, path))


def test_a_paper_record_cannot_carry_a_bench_client(tmp_path: Path) -> None:
    path = _edited(tmp_path, PAPER, "[workload]", "[client]\nnum_prompts = 2000\n\n[workload]")
    error = _refusal(tmp_path, path)
    assert "client" in _columns(error) and "only bench records" in str(error)


def test_a_zero_completion_time_is_refused(tmp_path: Path) -> None:
    error = _refusal(tmp_path, _edited(tmp_path, PAPER, "completion_s = 484", "completion_s = 0"))
    assert "figures.completion_s" in _columns(error)


def test_stated_and_unstated_at_once_is_refused(tmp_path: Path) -> None:
    path = _edited(
        tmp_path, PAPER, 'unstated = ["gpu_memory_utilization"', 'unstated = ["block_size", "gpu_memory_utilization"'
    )
    error = _refusal(tmp_path, path)
    assert "server.block_size" in _columns(error)


def test_a_stated_block_size_must_divide_the_kv_tokens(tmp_path: Path) -> None:
    text = PAPER.read_text().replace('kind = "paper"', 'kind = "startup"')
    text = text.replace("[workload]\n", "").replace('dataset = "Meta Natural Reasoning"\nnum_requests = 2000\n', "")
    text = text.replace("completion_s = 484", "kv_cache_tokens = 1000")
    text = text.replace("(484s).", "(484s). GPU KV cache size: 1,000 tokens")
    path = tmp_path / PAPER.name
    path.write_text(text)
    error = _refusal(tmp_path, path)
    assert "figures.kv_cache_tokens" in _columns(error) and "multiple of block_size 16" in str(error)


def test_meta_overrides_cannot_rewrite_a_published_record(tmp_path: Path) -> None:
    with Store(tmp_path / "store.duckdb") as store, pytest.raises(ValidationError, match="states its own fields"):
        store.ingest(BENCH, overrides={"device": "H100"})


def test_a_csv_row_quote_states_each_cell(tmp_path: Path) -> None:
    """A published CSV export's row is quoted verbatim; its cells are figures although commas also separate
    thousands in vLLM's logs (data/published/bench/dstack-* quote such rows)."""
    row = "h200,vllm,random,,64,,3200,800,1,76.59,1000,1000,1000"
    path = _edited(tmp_path, BENCH, "quote = [\n", f"quote = [\n  {row!r},\n")
    path.write_text(re.sub(r'  "Benchmark duration \(s\):\s+76\.59",\n', "", path.read_text()))
    assert "76.59" in row and "Benchmark duration (s):                  76.59" not in path.read_text()
    assert dict(parse_record(path.read_bytes(), path.name).figures)["duration_s"] == 76.59
    with_comma_run = row.replace(",76.59,", ",76.58,")
    path.write_text(path.read_text().replace(row, with_comma_run))
    error = _refusal(tmp_path, path)
    assert "figures.duration_s" in _columns(error)
