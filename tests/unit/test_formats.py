"""Every outside format into a real DuckDB file: what lands, what is derived, what is refused and why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.store import Store, ValidationError
from engine.store.queries import histogram_quantile
from tests.support.tool_outputs import bench_result, metrics_scrapes, query_range


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "formats.duckdb") as opened:
        yield opened


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# ------------------------------------------------------------------------------------------------ vllm bench serve


def test_bench_json_requests_and_derived_metrics(store: Store, tmp_path: Path) -> None:
    result = bench_result(n=30, seed=4)
    report = store.ingest(_write(tmp_path / "vllm-infqps.json", json.dumps(result)))
    (run,) = report.runs
    frame = store.requests(run.run_id)
    assert frame.height == 30
    t0 = min(result["start_times"])
    arrival = np.array(result["start_times"]) - t0
    order = np.argsort(arrival, kind="stable")
    assert frame["arrival_s"].to_numpy() == pytest.approx(arrival[order])
    assert frame["ttft_s"].to_numpy() == pytest.approx(np.array(result["ttfts"])[order])
    assert frame["e2e_s"].to_numpy() == pytest.approx(np.array(result["latencies"])[order])
    out = np.array(result["output_lens"])[order]
    tpot = (np.array(result["latencies"]) - np.array(result["ttfts"]))[order] / (out - 1)
    assert frame["tpot_s"].to_numpy() == pytest.approx(tpot)
    assert frame["queue_s"].null_count() == 30  # the client cannot see server-side scheduling
    meta = store.run_meta(run.run_id)
    assert meta["model_name"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert meta["created_at"] == "2026-11-23T10:15:00Z"
    assert meta["source"] == "upload" and meta["status"] == "complete"
    assert meta["device"] is None and "device" in meta["notes"] and "max_num_seqs" in meta["notes"]
    assert "model_config" in meta["_store"]["missing_fields"]
    assert (
        store.request_lengths(run.run_id).tolist()
        == np.column_stack([np.array(result["input_lens"])[order], out]).tolist()
    )


def test_bench_json_failed_requests_metadata_and_append_result(store: Store, tmp_path: Path) -> None:
    first = bench_result(n=10, seed=1, failed=3, device="NVIDIA H200", tp="2", max_num_seqs="256")
    second = bench_result(n=12, seed=2)
    path = _write(tmp_path / "appended.json", json.dumps(first) + "\n" + json.dumps(second))  # --append-result
    report = store.ingest(path)
    assert [len(store.requests(r.run_id)) for r in report.runs] == [7, 12]
    meta = store.run_meta(report.runs[0].run_id)
    assert (meta["device"], meta["tp"], meta["max_num_seqs"], meta["status"]) == ("NVIDIA H200", 2, 256, "partial")
    assert "3 failed request(s) left out" in meta["notes"]
    assert store.ingest(path).runs[0].action == "unchanged"


def test_bench_json_with_part_of_the_detail_is_refused_naming_the_key(store: Store, tmp_path: Path) -> None:
    result = bench_result()
    del result["output_lens"]
    with pytest.raises(ValidationError, match="per-request data incomplete") as info:
        store.ingest(_write(tmp_path / "half-detail.json", json.dumps(result)))
    assert info.value.problems[0].column == "output_lens"
    bad = bench_result()
    bad["ttfts"][3] = "fast"
    with pytest.raises(ValidationError) as info:
        store.ingest(_write(tmp_path / "bad.json", json.dumps(bad)))
    assert (info.value.problems[0].row, info.value.problems[0].column) == (4, "ttfts")
    assert store.table_counts()["runs"] == 0


# ----------------------------------------------------------------------------------------------------- Prometheus


def test_prometheus_text_one_run_per_dp_engine(store: Store, tmp_path: Path) -> None:
    text = metrics_scrapes(12, engines=("0", "1"))
    report = store.ingest(_write(tmp_path / "metrics.prom", text))
    assert len(report.runs) == 2
    runs = store.runs()
    assert runs.height == 2 and set(runs["engine_samples_rows"]) == {12}
    for outcome in report.runs:
        samples = store.engine_samples(outcome.run_id)
        assert samples["t_s"].to_list() == pytest.approx([0.5 * i for i in range(12)])
        assert samples["kv_usage"].max() == pytest.approx(1.0)
        assert samples["preemptions_total"].to_list()[0] == 0
        summary = store.measured_summary(outcome.run_id)
        assert summary["cliff_onset_s"] == pytest.approx(4.5)  # first scrape after the first preemption
        assert summary["preemptions"] == 6
        assert summary["kv_capacity_tokens"] == 64 * 128
        assert summary["num_requests"] == 33  # vllm:request_success over the span (first scrape's 3 before it)
        assert 0.05 <= summary["ttft_mean_s"] <= 0.3 and 1.0 <= summary["e2e_p50_s"] <= 4.0
        meta = store.run_meta(outcome.run_id)
        assert meta["block_size"] == 128 and meta["kv_blocks"] == 64
        assert meta["histograms"]["tpot_s"]["family"] == "vllm:inter_token_latency_seconds"
    gen = [store.engine_samples(r.run_id)["generation_tokens_total"][-1] for r in report.runs]
    assert gen == [250 * 12, 251 * 12]
    assert store.ingest(tmp_path / "metrics.prom").runs[0].action == "unchanged"


def test_prometheus_text_old_metric_names(store: Store, tmp_path: Path) -> None:
    text = metrics_scrapes(10, old_names=True)
    assert "vllm:gpu_cache_usage_perc" in text and "vllm:time_per_output_token_seconds_bucket" in text
    (run,) = store.ingest(_write(tmp_path / "old.txt", text)).runs
    assert store.engine_samples(run.run_id)["kv_usage"].max() == pytest.approx(0.9)
    assert store.run_meta(run.run_id)["histograms"]["tpot_s"]["family"] == "vllm:time_per_output_token_seconds"


def test_prometheus_hand_written_exposition_with_escapes(store: Store, tmp_path: Path) -> None:
    text = "\n".join(
        [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            'vllm:num_requests_running{model_name="a \\"quoted\\" model",engine="0"} 3 1000',
            'vllm:num_requests_running{model_name="a \\"quoted\\" model",engine="0"} 5 2000',
            'vllm:num_preemptions_total{model_name="a \\"quoted\\" model",engine="0"} 0 1000',
            'vllm:num_preemptions_total{model_name="a \\"quoted\\" model",engine="0"} 2 2000',
            'vllm:kv_cache_usage_perc{model_name="a \\"quoted\\" model",engine="0"} NaN 1000',
        ]
    )
    (run,) = store.ingest(_write(tmp_path / "hand.txt", text)).runs
    assert store.run_meta(run.run_id)["model_name"] == 'a "quoted" model'
    samples = store.engine_samples(run.run_id)
    assert samples["running"].to_list() == [3, 5] and samples["kv_usage"].null_count() == 2


def test_prometheus_without_timestamps_is_refused(store: Store, tmp_path: Path) -> None:
    text = 'vllm:num_requests_running{engine="0",model_name="m"} 3\n'
    with pytest.raises(ValidationError, match="no timestamp"):
        store.ingest(_write(tmp_path / "single.prom", "# TYPE vllm:num_requests_running gauge\n" + text))


def test_prometheus_query_range(store: Store, tmp_path: Path) -> None:
    response = query_range(
        {
            "vllm:num_requests_running": [1, 4, 8, 8],
            "vllm:num_requests_waiting": [9, 6, 2, 0],
            "vllm:gpu_cache_usage_perc": [0.1, 0.6, 1.0, 1.0],
            "vllm:num_preemptions_total": [0, 0, 1, 5],
            "vllm:generation_tokens_total": [0, 100, 250, 400],
        },
        step_s=2.0,
    )
    (run,) = store.ingest(_write(tmp_path / "range.json", json.dumps(response))).runs
    summary = store.measured_summary(run.run_id)
    assert (summary["cliff_onset_s"], summary["preemptions"], summary["peak_running"]) == (4.0, 5, 8)
    timeline = store.timeline(run.run_id)
    assert timeline.filter(series="generation_tokens_per_s")["value"].to_list() == pytest.approx([50.0, 75.0, 75.0])
    instant = {"status": "success", "data": {"resultType": "vector", "result": []}}
    with pytest.raises(ValidationError, match="range query"):
        store.ingest(_write(tmp_path / "instant.json", json.dumps(instant)))


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [[0.1, 10.0], [0.5, 30.0], [1.0, 40.0], [None, 40.0]]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (20 - 10) / 20)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * (39.6 - 30) / 10)
    assert histogram_quantile(0.5, []) is None


# ------------------------------------------------------------------------------------------------- plain tables


def test_plain_csv_jsonl_parquet_tables(store: Store, tmp_path: Path) -> None:
    csv = "run_id,t_s,running,waiting,kv_usage,preemptions_total\n" + "\n".join(
        f"{rid},{t},{t + 1},{5 - t},{t / 10},{max(0, t - 2)}" for rid in ("csv-a", "csv-b") for t in range(5)
    )
    report = store.ingest(_write(tmp_path / "samples.csv", csv))
    assert [r.run_id for r in report.runs] == ["csv-a", "csv-b"]
    assert store.measured_summary("csv-a")["cliff_onset_s"] == 3.0

    lines = [
        json.dumps(
            {
                "request_id": f"r{i}",
                "isl": 10 + i,
                "osl": 20,
                "arrival_s": 0.0,
                "first_scheduled_s": 0.05,
                "first_token_s": 0.1 + i / 10,
                "finished_s": 2.0 + i,
            }
        )
        for i in range(6)
    ]
    (run,) = store.ingest(_write(tmp_path / "requests.jsonl", "\n".join(lines))).runs
    summary = store.measured_summary(run.run_id)
    assert summary["num_requests"] == 6 and summary["queue_mean_s"] == pytest.approx(0.05)
    assert summary["generated_tokens"] == 6 * 20  # output_tokens unknown, finished: osl

    gpu = pa.table({"t_s": [0.0, 0.0, 1.0, 1.0], "gpu_index": [0, 1, 0, 1], "sm_util": [0.5, 0.6, 0.7, 0.8],
                    "power_w": [300.0, 310.0, 500.0, 520.0]})  # fmt: skip
    pq.write_table(gpu, tmp_path / "gpu.parquet")
    (run,) = store.ingest(tmp_path / "gpu.parquet").runs
    assert store.gpu_timeline(run.run_id).filter(series="power_w")["value"].max() == 520.0


@pytest.mark.parametrize(
    ("content", "row", "column", "fix"),
    [
        ("t_s,running\n0,1\n1,two\n", 2, "running", "whole number"),
        ("t_s,running\n0,1\n-1,2\n", 2, "t_s", "seconds since the run's start"),
        ("t_s,running\n0,1\n2,2\n1,3\n", 3, "t_s", "sort the rows"),
        ("t_s,kv_usage\n0,0.5\n1,85\n", 2, "kv_usage", "divide by 100"),
        ("t_s,preemptions_total\n0,5\n1,3\n", 2, "preemptions_total", "restart"),
        ("t_s,running\n0,1\nnan,2\n", 2, "t_s", "fill in t_s"),  # CSV's nan/NA/empty mean missing
        ("t_s,kv_usage\n0,0.5\n1,inf\n", 2, "kv_usage", "finite"),
        ("request_id,isl,osl,arrival_s\nr1,5,5,0\nr1,5,5,0\n", 2, "request_id", "own id"),
        ("request_id,isl,osl,arrival_s,first_token_s\nr1,5,5,1.0,0.5\n", 1, "first_token_s", "arrival"),
        ("request_id,isl,osl,arrival_s\nr1,5,0,0\n", 1, "osl", "at least 1"),
        ("t_s,running,colour\n0,1,red\n", None, None, "documented columns"),
    ],
)
def test_plain_table_problems_name_row_column_and_fix(
    store: Store, tmp_path: Path, content: str, row: int | None, column: str | None, fix: str
) -> None:
    with pytest.raises(ValidationError) as info:
        store.ingest(_write(tmp_path / "bad.csv", content))
    problem = info.value.problems[0]
    assert (problem.row, problem.column) == (row, column), str(info.value)
    assert fix in problem.fix and problem.file == "bad.csv"
    assert store.table_counts()["runs"] == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "empty"),
        ("latin1.csv", "t_s,name\n0,caf\xe9\n".encode("latin-1"), "UTF-8"),
        ("trunc.parquet", b"PAR1\x00\x01\x02", "Parquet"),
        ("broken.zip", b"PK\x03\x04garbage", "zip"),
        ("run.json", json.dumps({"run_id": "x", "bundle_version": 1}).encode(), "whole bundle"),
        ("other.json", b'{"hello": "world"}', "not a vLLM bench result"),
        ("nested.jsonl", b'{"t_s": 0, "running": [1, 2]}\n', "nested"),
        ("trailing.json", b'[{"t_s": 0,}]', "not valid JSON"),
    ],
)
def test_unreadable_files_are_refused_clearly(store: Store, tmp_path: Path, name: str, content: bytes, message: str):
    with pytest.raises(ValidationError, match=message):
        store.ingest(_write(tmp_path / name, content))


def test_limits_are_enforced(tmp_path: Path) -> None:
    from engine.store import Limits

    csv = "t_s,running\n" + "\n".join(f"{t},1" for t in range(100))
    path = _write(tmp_path / "s.csv", csv)
    small = Store(tmp_path / "small.duckdb", limits=Limits(max_rows=50))
    with small, pytest.raises(ValidationError, match="over the limit of 50"):
        small.ingest(path)
    tiny = Store(tmp_path / "tiny.duckdb", limits=Limits(max_file_bytes=100))
    with tiny, pytest.raises(ValidationError, match="limit"):
        tiny.ingest(path)


def test_upload_bytes_and_overrides(store: Store) -> None:
    data = json.dumps(bench_result(n=5)).encode()
    report = store.ingest_bytes(data, "../../etc/passwd.json", overrides={"device": "NVIDIA H100", "tp": 1})
    meta = store.run_meta(report.runs[0].run_id)
    assert meta["device"] == "NVIDIA H100" and "device" not in meta["_store"]["missing_fields"]
    assert meta["_store"]["source_file"] == "../../etc/passwd.json"  # a label only, never a path
