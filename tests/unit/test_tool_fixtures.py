"""Files written by the real tools (tests/integration/store_fixtures/README.md has the commands): each lands, and the
run's figures are the tool's own summary figures."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from engine.store import Store
from tests.support.paths import TOOL_FILES

FIXTURES = TOOL_FILES
SUMMARY = FIXTURES / "vllm-0.32-bench-serve-summary.json"
SWEEP = FIXTURES / "vllm-0.32-bench-sweep"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "tools.duckdb") as opened:
        yield opened


def _figures_match(summary: dict, result: dict) -> None:
    """The measured summary of a run without request rows is the client's summary, in seconds."""
    assert summary["num_requests"] == result["completed"]
    assert summary["completion_s"] == pytest.approx(result["duration"])
    assert summary["generated_tokens"] == result["total_output_tokens"]
    assert summary["generation_tokens_per_s"] == pytest.approx(result["output_throughput"])
    for ours, theirs in (("ttft", "ttft"), ("tpot", "tpot"), ("e2e", "e2el")):
        for stat, word in (("mean", "mean"), ("p50", "median"), ("p99", "p99")):
            key = f"{word}_{theirs}_ms"
            expected = result[key] / 1000 if key in result else None
            assert summary[f"{ours}_{stat}_s"] == pytest.approx(expected), key


def test_vllm_bench_summary_only_lands_with_the_clients_figures(store: Store) -> None:
    result = json.loads(SUMMARY.read_text())
    assert "ttfts" not in result and "input_lens" not in result  # saved without --save-detailed
    (run,) = store.ingest(SUMMARY).runs
    assert run.rows.get("requests", 0) == 0
    _figures_match(store.measured_summary(run.run_id), result)
    meta = store.run_meta(run.run_id)
    assert meta["max_num_seqs"] == 16 and meta["device"] == "cpu"  # --metadata pairs
    assert "without --save-detailed" in meta["notes"] and "per-request" in meta["notes"]


def _sweep_points() -> list[Path]:
    return sorted(SWEEP.glob("*/run=*.json"))


def test_vllm_bench_sweep_folder_is_one_run_per_point_linked_as_one_sweep(store: Store) -> None:
    points = _sweep_points()
    assert len(points) >= 2
    report = store.ingest(SWEEP)
    assert len(report.runs) == len(points)
    sweeps = set()
    for run in report.runs:
        meta = store.run_meta(run.run_id)
        sweep = meta["sweep"]
        sweeps.add(sweep["id"])
        point = json.loads((SWEEP / sweep["combination"] / f"run={sweep['run_number']}.json").read_text())
        _figures_match(store.measured_summary(run.run_id), point)
        assert meta["max_num_seqs"] == point["max_num_seqs"] == 4  # the serve parameter the sweep set
        assert sweep["parameters"]["max_concurrency"] == point["max_concurrency"]
    assert len(sweeps) == 1
    concurrency = sorted(store.run_meta(r.run_id)["sweep"]["parameters"]["max_concurrency"] for r in report.runs)
    assert concurrency == [1, 4]


def test_a_zipped_sweep_is_the_same_sweep(store: Store) -> None:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(SWEEP.rglob("*")):
            if file.is_file():
                archive.write(file, f"results/{SWEEP.name}/{file.relative_to(SWEEP).as_posix()}")
    from_folder = sorted(r.run_id for r in store.ingest(SWEEP).runs)
    for run_id in from_folder:
        store.delete_run(run_id)
    assert sorted(r.run_id for r in store.ingest_bytes(sink.getvalue(), "sweep.zip").runs) == from_folder


GUIDELLM = FIXTURES / "guidellm-0.8-benchmarks.json"
needs_guidellm_report = pytest.mark.skipif(
    not GUIDELLM.is_file(), reason="the real GuideLLM report is not made yet (make_tool_fixtures guidellm)"
)


@needs_guidellm_report
def test_guidellm_report_one_run_per_benchmark_matching_its_own_metrics(store: Store) -> None:
    report = json.loads(GUIDELLM.read_text())
    benchmarks = report["benchmarks"]
    kinds = [b["config"]["strategy"]["type_"] for b in benchmarks]
    assert "synchronous" in kinds and "throughput" in kinds  # a sweep: synchronous, throughput, then rates
    landed = store.ingest(GUIDELLM).runs
    assert len(landed) == len(benchmarks)
    for run, bench in zip(landed, benchmarks, strict=True):
        rows = store.requests(run.run_id)
        successful = bench["requests"]["successful"]
        assert rows.height == len(successful) == bench["metrics"]["request_totals"]["successful"]
        summary = store.measured_summary(run.run_id)
        metrics = bench["metrics"]
        # means over the same requests are the same numbers; GuideLLM's own medians interpolate differently
        assert summary["ttft_mean_s"] == pytest.approx(metrics["time_to_first_token_ms"]["successful"]["mean"] / 1e3)
        assert summary["e2e_mean_s"] == pytest.approx(metrics["request_latency"]["successful"]["mean"])
        assert summary["tpot_mean_s"] == pytest.approx(metrics["inter_token_latency_ms"]["successful"]["mean"] / 1e3)
        assert summary["generated_tokens"] == metrics["output_token_count"]["successful"]["total_sum"]
        meta = store.run_meta(run.run_id)
        assert bench["config"]["strategy"]["type_"] in meta["name"] and "GuideLLM" in meta["notes"]
        assert meta["client_summary"]["ttft_p50_s"] == pytest.approx(
            metrics["time_to_first_token_ms"]["successful"]["median"] / 1e3
        )


@needs_guidellm_report
def test_guidellm_report_as_yaml_is_the_same_report(store: Store, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "benchmarks.yaml"
    path.write_text(yaml.safe_dump(json.loads(GUIDELLM.read_text())))
    json_runs = [(r.run_id, r.rows) for r in store.ingest(GUIDELLM).runs]
    assert len([(r.run_id, r.rows) for r in store.ingest(path).runs]) == len(json_runs)
