"""Files written by vLLM's own tools (tests/support/tool_files/README.md) into the store: the numbers the store derives
agree with the ones vLLM's benchmark client printed into the same file, and the /metrics scrapes of that run agree
with the client's request list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.store import Store
from tests.support.paths import TOOL_FILES

FIXTURES = TOOL_FILES
BENCH = FIXTURES / "vllm-0.32-bench-serve-detailed.json"
SCRAPES = FIXTURES / "vllm-0.32-cpu-metrics-scrapes.prom"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "real.duckdb") as opened:
        yield opened


def test_vllm_bench_serve_file_matches_the_clients_own_figures(store: Store) -> None:
    result = json.loads(BENCH.read_text())
    (run,) = store.ingest(BENCH).runs
    summary = store.measured_summary(run.run_id)
    assert summary["num_requests"] == result["completed"] == 24
    assert summary["generated_tokens"] == result["total_output_tokens"]
    assert summary["ttft_mean_s"] * 1000 == pytest.approx(result["mean_ttft_ms"])
    assert summary["ttft_p50_s"] * 1000 == pytest.approx(result["median_ttft_ms"])
    assert summary["ttft_p99_s"] * 1000 == pytest.approx(result["p99_ttft_ms"])
    assert summary["tpot_mean_s"] * 1000 == pytest.approx(result["mean_tpot_ms"])
    assert summary["tpot_p50_s"] * 1000 == pytest.approx(result["median_tpot_ms"])
    assert summary["tpot_p99_s"] * 1000 == pytest.approx(result["p99_tpot_ms"])
    assert summary["completion_s"] == pytest.approx(result["duration"], rel=0.01)
    meta = store.run_meta(run.run_id)
    assert (meta["device"], meta["max_num_seqs"], meta["block_size"]) == ("cpu", 16, 32)  # from --metadata
    assert store.request_lengths(run.run_id).tolist() == [[48, 96]] * 24


def test_vllm_metrics_scrapes_of_the_same_run(store: Store) -> None:
    result = json.loads(BENCH.read_text())
    (run,) = store.ingest(SCRAPES).runs
    meta = store.run_meta(run.run_id)
    assert meta["kv_capacity_tokens"] == 1024 and meta["kv_blocks"] == 32 and meta["block_size"] == 32
    assert meta["kv_cache_memory_bytes"] == 2 * 1024 * 1024
    assert "3 idle scrape(s) before it" in meta["notes"]  # the 4th is t = 0
    summary = store.measured_summary(run.run_id)
    assert summary["num_requests"] == 24
    assert summary["generated_tokens"] == result["total_output_tokens"]
    assert summary["preemptions"] > 0 and 0 < summary["cliff_onset_s"] < summary["completion_s"]
    assert summary["peak_running"] <= 16 and 0.9 < summary["peak_kv_usage"] <= 1.0
    # server-side latencies (histograms) against the client's: same run, HTTP and scrape granularity apart
    assert summary["ttft_mean_s"] * 1000 == pytest.approx(result["mean_ttft_ms"], rel=0.25)
    assert summary["tpot_mean_s"] * 1000 == pytest.approx(result["mean_tpot_ms"], rel=0.25)
    assert summary["completion_s"] == pytest.approx(result["duration"], abs=1.5)  # scrapes every 0.5 s
    timeline = store.timeline(run.run_id)
    assert timeline.filter(series="kv_usage")["value"].max() == summary["peak_kv_usage"]
