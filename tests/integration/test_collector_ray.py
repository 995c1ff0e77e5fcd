"""A two-job sweep on a local Ray cluster (started here with ``ray.init(num_cpus=2)``), landing in a real S3 API
(moto's server mode): one job completes, the other's worker is killed mid-run and lands as a ``partial`` run, both
are ingested by the store, and a re-run would skip only the complete one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from collectors.inbox import open_inbox
from collectors.sweep import sweep_from_mapping
from tests.support.s3_server import S3Endpoint, aws_environment

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SWEEP = {
    "sweep": {"name": "ci-ray", "experiment": "IV-A", "title": "two jobs on Ray", "target": "cpu"},
    "base": {
        "model": "tiny-llama-4l",
        "device": "cpu",
        "kv_cache_memory_bytes": 1 << 20,
        "max_model_len": 256,
        "max_num_seqs": 16,
        "max_num_batched_tokens": 512,
        "sample_gpus": False,
    },
    "points": [
        {"label": "short", "num_requests": 8, "workload": "fixed:32,32"},
        {"label": "killed", "num_requests": 64, "workload": "fixed:32,192"},  # long enough to be killed mid-run
    ],
}


def kill_when_sampling(work_dir: Path, stop: threading.Event, killed: list[int], orphans: list[Any]) -> None:
    """SIGKILL the Ray worker running a job once it has recorded engine samples (its pid is in meta.json); its
    children (vLLM's engine core) are remembered so the test can stop any that outlive it."""
    import psutil

    while not stop.is_set():
        samples = work_dir / "engine.jsonl"
        if samples.is_file() and samples.stat().st_size > 2000:
            pid = int(json.loads((work_dir / "meta.json").read_text())["collector_pid"])
            with contextlib.suppress(psutil.Error):
                orphans.extend(psutil.Process(pid).children(recursive=True))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.2)


def stop_orphans(orphans: list[Any]) -> list[int]:
    """Kill what the killed worker left running; returns the pids that had outlived it."""
    import psutil

    lingering = [p for p in orphans if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for proc in lingering:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return [p.pid for p in lingering]


def test_two_jobs_on_ray_one_worker_killed(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    import ray

    from collectors.ray_runner import run_sweep_on_ray

    bucket = f"cliffscope-{uuid.uuid4().hex[:8]}"
    s3_endpoint.client().create_bucket(Bucket=bucket)
    sweep = sweep_from_mapping(SWEEP, "ci-ray")
    short, long = sweep.jobs
    env = s3_endpoint.env | {
        "CLIFFSCOPE_SPOOL": str(tmp_path / "spool"),
        "PYTHONPATH": str(REPO),  # Ray's workers inherit the driver's environment
        "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"),
    }
    stop, killed, orphans = threading.Event(), [], []
    with aws_environment(env):
        inbox = open_inbox(f"s3://{bucket}/runs")
        killer = threading.Thread(
            target=kill_when_sampling, args=(inbox.local / ".work" / long.run_id, stop, killed, orphans), daemon=True
        )
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="cliffscope-test")
        try:
            killer.start()
            report = run_sweep_on_ray(sweep, inbox, None)
            done_after = inbox.completed_run_ids()
        finally:
            stop.set()
            ray.shutdown()
            lingering = stop_orphans(orphans)

    statuses = {r.run_id: r.status for r in report.results}
    assert killed, "the long job finished before it could be killed"
    assert statuses == {short.run_id: "complete", long.run_id: "partial"}, report.results
    assert done_after == {short.run_id}  # a re-run skips the complete point and redoes the killed one
    heads = {
        o["Key"]: s3_endpoint.client().head_object(Bucket=bucket, Key=o["Key"])["Metadata"]["status"]
        for o in s3_endpoint.client().list_objects_v2(Bucket=bucket)["Contents"]
    }
    assert heads == {f"runs/{short.run_id}.zip": "complete", f"runs/{long.run_id}.zip": "partial"}

    db = str(tmp_path / "ray.duckdb")
    cli_env = os.environ | s3_endpoint.env
    imported = subprocess.run(
        [sys.executable, "-m", "engine", "import", "--inbox", f"s3://{bucket}/runs", "--db", db],
        cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    runs = subprocess.run(
        [sys.executable, "-m", "engine", "runs", "--db", db, "--json"],
        cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    listed = {r["run_id"]: r["status"] for r in json.loads(runs.stdout)["runs"]}
    assert listed == statuses
    print(f"ray: {statuses}; processes the killed worker left behind (stopped by the test): {lingering}")
