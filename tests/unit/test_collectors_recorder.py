"""The crash-safe recorder: what was flushed survives, a torn line is dropped, dead collectors' runs become partial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from collectors.job import job_meta, plan_requests
from collectors.recorder import (
    WORK_DIR_NAME,
    Recorder,
    ReplicaWriter,
    finalise,
    ledger,
    merge_replica_samples,
    recover,
)
from collectors.runner import completed_run_ids
from collectors.spec import JobSpec
from engine.bundle import RUN_FIELDS

TINY_CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 256, "num_hidden_layers": 4}


def _recorder(inbox: Path, job: JobSpec) -> Recorder:
    plan = [
        {"request_id": p.request_id, "isl": p.isl, "osl": p.osl, "arrival_s": p.arrival_s} for p in plan_requests(job)
    ]
    return Recorder(inbox / WORK_DIR_NAME / job.run_id, job_meta(job, TINY_CONFIG, "cpu"), plan)


def test_finalise_builds_a_complete_bundle(tmp_path: Path) -> None:
    job = JobSpec(name="unit", num_requests=3, workload="fixed:4,8")
    rec = _recorder(tmp_path, job)
    rec.update_meta(kv_capacity_tokens=2048, kv_blocks=64)
    rec.engine_sample((0.01, 1, 2, 0.1, 4, 1, 0))
    rec.engine_sample((0.02, 3, 0, 0.4, 12, 3, 1))
    rec.request_event("r00000", arrival_s=0.0, first_scheduled_s=0.001, first_token_s=0.01)
    rec.request_event("r00000", finished_s=0.5, num_preemptions=1, output_tokens=8)
    rec.close()
    bundle = finalise(rec.work_dir, tmp_path, "complete")
    meta = json.loads((bundle / "run.json").read_text())
    assert meta["status"] == "complete" and meta["kv_capacity_tokens"] == 2048
    assert all(meta.get(k) is not None for k, (_, required, _) in RUN_FIELDS.items() if required)
    engine = pq.read_table(bundle / "engine_samples.parquet").to_pylist()
    assert [r["preemptions_total"] for r in engine] == [0, 1]
    requests = {r["request_id"]: r for r in pq.read_table(bundle / "requests.parquet").to_pylist()}
    assert len(requests) == 3
    assert requests["r00000"]["finished_s"] == 0.5 and requests["r00000"]["num_preemptions"] == 1
    assert requests["r00001"]["finished_s"] is None and requests["r00001"]["isl"] == 4
    assert not rec.work_dir.exists()
    assert ledger(tmp_path)[job.run_id] == "complete"
    assert job.run_id in completed_run_ids(tmp_path)


def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    job = JobSpec(name="torn", num_requests=1, workload="fixed:4,8")
    rec = _recorder(tmp_path, job)
    rec.engine_sample((0.01, 1, 0, 0.1, 4, 1, 0))
    rec.close()
    with (rec.work_dir / "engine.jsonl").open("a") as fh:
        fh.write("[0.02, 1, 0, 0.")  # a kill in the middle of a write
    bundle = finalise(rec.work_dir, tmp_path, "partial")
    assert pq.read_table(bundle / "engine_samples.parquet").num_rows == 1
    meta = json.loads((bundle / "run.json").read_text())
    assert meta["status"] == "partial" and "stopped before the batch finished" in meta["error"]
    assert job.run_id not in completed_run_ids(tmp_path)


def test_recover_finalises_dead_collectors_only(tmp_path: Path) -> None:
    dead = JobSpec(name="dead", num_requests=2, workload="fixed:4,8")
    alive = JobSpec(name="alive", num_requests=2, workload="fixed:4,8")
    rec_dead = _recorder(tmp_path, dead)
    rec_dead.engine_sample((0.01, 1, 0, 0.1, 4, 1, 0))
    rec_dead.close()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    rec_dead.update_meta(collector_pid=int(finished.stdout))  # a pid that has exited
    rec_alive = _recorder(tmp_path, alive)  # this process: alive
    rec_alive.close()
    bundles = recover(tmp_path)
    assert [b.name for b in bundles] == [dead.run_id]
    assert json.loads((bundles[0] / "run.json").read_text())["status"] == "partial"
    assert rec_alive.work_dir.exists()
    assert [b.name for b in recover(tmp_path, force=True)] == [alive.run_id]


def test_replica_streams_merge_into_one_timeline(tmp_path: Path) -> None:
    merged = merge_replica_samples(
        [
            [[0.1, 2, 1, 0.5, 10, 2, 0], [0.3, 1, 0, 1.0, 10, 6, 1]],
            [[0.2, 3, 0, 0.2, 12, 3, 0]],
        ]
    )
    assert [row[0] for row in merged] == [0.1, 0.2, 0.3]
    assert merged[0][1:] == [2, 1, 0.25, 10, 2, 0]  # replica 1 not sampled yet: idle
    assert merged[2][1:] == [4, 0, 0.6, 22, 9, 1]
    job = JobSpec(name="dp", num_requests=2, workload="fixed:4,8")
    rec = _recorder(tmp_path, job)
    rec.close()
    for k in range(2):
        writer = ReplicaWriter(rec.work_dir, k)
        writer.engine_sample((0.1 * (k + 1), 1, 0, 0.5, 4, 1, 0))
        writer.request_event(f"r0000{k}", finished_s=1.0 + k, num_preemptions=k, output_tokens=8)
        writer.close()
    bundle = finalise(rec.work_dir, tmp_path, "complete")
    assert pq.read_table(bundle / "engine_samples.parquet").column("running").to_pylist() == [1, 2]
    finished = pq.read_table(bundle / "requests.parquet").column("finished_s").to_pylist()
    assert finished == [1.0, 2.0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_samples_survive_sigkill(tmp_path: Path) -> None:
    """A process killed with SIGKILL right after writing keeps every line it wrote (line-buffered, flushed)."""
    job = JobSpec(name="killed", num_requests=2, workload="fixed:4,8")
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(Path.cwd())!r})
from collectors.job import job_meta, plan_requests
from collectors.recorder import Recorder, WORK_DIR_NAME
from collectors.spec import JobSpec
from pathlib import Path
job = JobSpec(name="killed", num_requests=2, workload="fixed:4,8")
plan = [dict(request_id=p.request_id, isl=p.isl, osl=p.osl, arrival_s=p.arrival_s) for p in plan_requests(job)]
rec = Recorder(Path({str(tmp_path)!r}) / WORK_DIR_NAME / job.run_id, job_meta(job, {{"a": 1}}, "cpu"), plan)
for i in range(100):
    rec.engine_sample((i / 100, 1, 0, 0.5, 4, i, 0))
rec.request_event("r00000", first_token_s=0.01)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    [bundle] = recover(tmp_path)
    assert bundle.name == job.run_id
    assert pq.read_table(bundle / "engine_samples.parquet").num_rows == 100
    rows = pq.read_table(bundle / "requests.parquet").to_pylist()
    assert rows[0]["first_token_s"] == 0.01


def test_preemptions_are_retimed_to_the_schedulers_stamps() -> None:
    from collectors.recorder import retime_preemptions

    counted = [[0.1, 4, 0, 1.0, 8, 4, 0], [0.5, 3, 1, 1.0, 8, 9, 0], [0.9, 4, 0, 1.0, 8, 14, 1]]
    assert [r[6] for r in retime_preemptions(counted, [0.3])] == [0, 1, 1]
    # events that do not account for every counted preemption leave vLLM's counter as it was
    assert retime_preemptions(counted, []) == counted
    twice = [[0.1, 4, 0, 1.0, 8, 4, 0], [0.5, 3, 1, 1.0, 8, 9, 2]]
    assert [r[6] for r in retime_preemptions(twice, [0.4])] == [0, 2]
