"""Files written by the real tools (tests/support/tool_files/README.md has the commands): each lands, and the
run's figures are the tool's own summary figures."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import pytest

from engine.store import Store
from tests.support.guidellm_report import check_against_guidellm
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


# GuideLLM 0.8.1 reports of `guidellm run` against the vLLM CPU test server (README.md there has the commands).
GUIDELLM_REPORTS = {
    "sweep": FIXTURES / "guidellm-0.8-sweep.json.gz",  # synchronous, throughput, then two poisson rates
    "concurrent": FIXTURES / "guidellm-0.8-concurrent.json.gz",  # 2 and 4 streams
    "constant": FIXTURES / "guidellm-0.8-constant.json.gz",  # 4 requests/s
}
GUIDELLM_KINDS = {
    "sweep": ["synchronous", "throughput", "poisson", "poisson"],
    "concurrent": ["concurrent", "concurrent"],
    "constant": ["constant"],
}


def _guidellm(name: str) -> dict:
    return json.loads(gzip.decompress(GUIDELLM_REPORTS[name].read_bytes()))


@pytest.mark.parametrize("name", sorted(GUIDELLM_REPORTS))
def test_guidellm_report_one_run_per_benchmark_matching_its_own_metrics(store: Store, name: str) -> None:
    report = _guidellm(name)
    benchmarks = report["benchmarks"]
    assert [b["config"]["strategy"]["type_"] for b in benchmarks] == GUIDELLM_KINDS[name]
    landed = store.ingest(GUIDELLM_REPORTS[name]).runs
    assert len(landed) == len(benchmarks)
    for run, bench in zip(landed, benchmarks, strict=True):
        check_against_guidellm(store, run.run_id, bench)
        meta, strategy = store.run_meta(run.run_id), bench["config"]["strategy"]
        assert meta["name"].startswith(f"GuideLLM {strategy['type_']}") and "GuideLLM 0.8.1" in meta["notes"]
        assert meta["model_name"] == "tiny-llama-4l" and meta["status"] == "complete"
        assert meta["arrival_rate"] == (strategy["rate"] if strategy["type_"] in ("poisson", "constant") else None)
        if strategy["type_"] == "concurrent":
            assert f"{strategy['streams']} streams" in meta["name"]


def test_guidellm_report_as_yaml_is_the_same_report(store: Store) -> None:
    """The same `guidellm run` wrote both (two --output options): the same runs, rows and figures."""
    from_json = store.ingest(GUIDELLM_REPORTS["constant"]).runs
    from_yaml = store.ingest(FIXTURES / "guidellm-0.8-constant.yaml.gz").runs
    assert len(from_yaml) == len(from_json) == 1
    for a, b in zip(from_json, from_yaml, strict=True):
        assert a.run_id != b.run_id and a.rows == b.rows
        assert store.measured_summary(a.run_id) == pytest.approx(store.measured_summary(b.run_id), nan_ok=True)
        assert store.run_meta(a.run_id)["client_summary"] == store.run_meta(b.run_id)["client_summary"]


def test_guidellm_report_edited_as_other_setups_write_it(store: Store) -> None:
    """The real report as a server without --enable-per-request-metrics, a --sample-size run and a run with failures
    would have written it: queue times unknown, GuideLLM's own count kept, the run partial — each said in the notes."""
    report = _guidellm("constant")
    bench = report["benchmarks"][0]
    for request in bench["requests"]["successful"]:
        request["response_metrics"] = None
    bench["requests"]["successful"] = bench["requests"]["successful"][:4]
    bench["metrics"]["request_totals"].update(errored=1, total=7)
    (run,) = store.ingest_bytes(json.dumps(report).encode(), "edited-benchmarks.json").runs
    meta, summary = store.run_meta(run.run_id), store.measured_summary(run.run_id)
    assert run.rows["requests"] == 4 and meta["num_requests"] == 6 and meta["status"] == "partial"
    assert summary["queue_mean_s"] is None and store.requests(run.run_id)["first_scheduled_s"].null_count() == 4
    assert (
        "keeps 4 of the 6" in meta["notes"]
        and "1 errored" in meta["notes"]
        and "Queue times are unknown" in (meta["notes"])
    )
