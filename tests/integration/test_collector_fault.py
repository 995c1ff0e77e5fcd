"""Fault tolerance with a real vLLM job: SIGKILL the collector mid-run; its samples become a partial bundle that the
store ingests cleanly, and a re-run knows the point is not complete."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from collectors.sweep import load_sweep

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300)]
REPO = Path(__file__).resolve().parents[2]

SWEEP = """
[sweep]
name = "fault"
experiment = "test"
title = "a job to kill"
target = "cpu"

[base]
model = "tiny-llama-4l"
workload = "fixed:32,256"
num_requests = 96
max_num_seqs = 32
kv_cache_memory_bytes = 4194304
max_model_len = 512
"""


def _count_lines(path: Path) -> int:
    try:
        return sum(1 for _ in path.open())
    except FileNotFoundError:
        return 0


def test_sigkill_mid_run_leaves_a_partial_bundle_that_ingests(tmp_path: Path) -> None:
    from engine.store import Store

    sweep_file = tmp_path / "fault.toml"
    sweep_file.write_text(SWEEP)
    [job] = load_sweep(sweep_file).jobs
    inbox = tmp_path / "inbox"
    env = os.environ | {"VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"), "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "collectors",
        "run",
        str(sweep_file),
        "--inbox",
        str(inbox),
        "--quiet",
        "--no-host-profile",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    samples = inbox / ".work" / job.run_id / "engine.jsonl"
    try:
        deadline = time.monotonic() + 150
        while _count_lines(samples) < 300:
            assert proc.poll() is None, "the collector exited before it could be killed"
            assert time.monotonic() < deadline, "no samples appeared within 150 s"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        time.sleep(2)  # vLLM's engine-core and worker processes notice their parent is gone
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the processes this test started, whatever is left of them
    kept = _count_lines(samples)

    out = subprocess.run(
        [sys.executable, "-m", "collectors", "recover", str(inbox)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    bundle = inbox / job.run_id
    assert str(bundle) in out.stdout
    meta = json.loads((bundle / "run.json").read_text())
    assert meta["status"] == "partial" and meta["error"]
    engine_rows = pq.read_table(bundle / "engine_samples.parquet").num_rows
    assert engine_rows >= kept - 1  # at most the line torn by the kill is lost
    requests = pq.read_table(bundle / "requests.parquet").to_pylist()
    assert len(requests) == 96
    assert any(r["finished_s"] is None for r in requests)

    with Store(tmp_path / "db.duckdb") as store:
        store.ingest(bundle)
        runs = store.runs()
        assert runs.filter(runs["run_id"] == job.run_id)["status"].to_list() == ["partial"]
        assert store.timeline(job.run_id).height > 0

    dry = subprocess.run([*cmd[:-2], "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert f"todo  {job.run_id}" in dry.stdout  # a partial run is re-run, not skipped
