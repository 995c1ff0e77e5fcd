"""Run a sweep's jobs on a Ray cluster: Ray places each job where its layout fits; we never schedule ourselves.

``python -m collectors run SWEEP.toml --ray auto|ADDRESS [--inbox s3://bucket/prefix]``. Each job (one point of
the sweep) becomes one Ray task that starts its own vLLM engine (or DP replicas) on the node Ray chose, runs the
batch and lands its bundle; the driver waits on the tasks and shows overall progress.

Resources: a job asks for what its layout needs on one node, through a placement group of one bundle with the
``STRICT_PACK`` strategy (a bundle is never split across nodes): ``dp × tp × pp`` GPUs on GPU hosts (TP/PP ranks
talk over NVLink, and the DP replicas of one job are started by one process), or as many CPUs on the CPU backend
(one core per rank, as ``collectors.replicas`` pins them). Ray queues a job until a node has room; nothing here
decides placement.

Failures: an engine that refuses to start or fails mid-run leaves a ``failed`` bundle from inside the task (as in
``collectors.runner``). A worker that dies (killed, out of memory, node lost) cannot write anything, so the driver
finalises what its work directory holds as a ``partial`` run when that directory is reachable here (same host or
shared storage), else records a ``failed`` run naming the lost worker; the sweep goes on either way, and tasks are
never retried by Ray (a retry would run a point twice; re-running the sweep redoes only what is not complete).

Bundles: workers write into the inbox directory (a shared filesystem path), or for an ``s3://`` inbox into their
local spool and upload from there (``collectors.inbox``), so nodes need no shared disk.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectors.inbox import CollectorInbox
from collectors.job import JobResult, record_failure
from collectors.progress import SweepProgress
from collectors.recorder import WORK_DIR_NAME, recover
from collectors.runner import SweepReport
from collectors.spec import JobSpec
from collectors.sweep import Sweep


@dataclass(frozen=True)
class JobResources:
    """What one job asks Ray for: one bundle of CPUs/GPUs kept on one node."""

    num_cpus: float
    num_gpus: float

    def bundle(self) -> dict[str, float]:
        return {"CPU": self.num_cpus, **({"GPU": self.num_gpus} if self.num_gpus else {})}


def job_resources(job: JobSpec, cluster_gpus: float) -> JobResources:
    """``dp × tp × pp`` GPUs (and one CPU for the driving process) on GPU hosts; that many CPUs on the CPU backend."""
    e = job.engine
    ranks = e.dp * e.tp * e.pp
    on_gpu = e.device == "cuda" or (e.device == "auto" and cluster_gpus > 0)
    if on_gpu:
        return JobResources(num_cpus=1, num_gpus=ranks)
    return JobResources(num_cpus=ranks, num_gpus=0)


def run_job_on_worker(job: JobSpec, inbox: CollectorInbox, sweep_info: dict[str, Any]) -> dict[str, Any]:
    """The Ray task's body: start the engine, run the job, land and publish its bundle; a plain dict back."""
    from collectors.job import EngineSession
    from collectors.replicas import ReplicaPool

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    inbox.local.mkdir(parents=True, exist_ok=True)
    try:
        session: Any = ReplicaPool(job.engine) if job.engine.dp > 1 else EngineSession(job.engine)
    except Exception as exc:
        result = record_failure(job, inbox.local, f"vLLM engine did not start: {type(exc).__name__}: {exc}")
    else:
        try:
            result = session.run(job, inbox.local, None, None, sweep_info)
        finally:
            session.close()
    where = inbox.publish(result.bundle, result.status)
    return {
        "run_id": result.run_id,
        "status": result.status,
        "where": where,
        "wall_s": result.wall_s,
        "preemptions": result.preemptions,
        "error": result.error,
        "host": socket.gethostname(),
    }


def run_sweep_on_ray(
    sweep: Sweep,
    inbox: CollectorInbox,
    address: str | None,
    progress: SweepProgress | None = None,
) -> SweepReport:
    """Submit every point not yet complete as a Ray task in its own placement group; collect as they finish.

    ``address``: ``auto``, ``ray://host:10001`` or ``host:6379`` for ``ray.init``; None when Ray is already
    initialised in this process (tests).
    """
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    if address is not None and not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    report = SweepReport(recovered=recover(inbox.local))
    for bundle in report.recovered:
        inbox.publish(bundle, "partial")
    done = inbox.completed_run_ids()
    progress = progress or SweepProgress(len(sweep.jobs), enabled=False)
    info = {"name": sweep.name, "experiment": sweep.experiment, "title": sweep.title, "target": sweep.target}
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    remote = ray.remote(max_retries=0)(run_job_on_worker)
    pending: dict[Any, tuple[JobSpec, Any]] = {}
    for job in sweep.jobs:
        if job.run_id in done:
            report.skipped.append(job.run_id)
            progress.end_job(job.name, "skipped", "(already complete)")
            continue
        need = job_resources(job, cluster_gpus)
        group = placement_group([need.bundle()], strategy="STRICT_PACK", name=f"cliffscope-{job.run_id}")
        ref = remote.options(
            num_cpus=need.num_cpus,
            num_gpus=need.num_gpus,
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0),
            name=f"cliffscope:{job.name}",
        ).remote(job, inbox, info)
        pending[ref] = (job, group)
    progress.message(f"{len(pending)} job(s) submitted to Ray ({ray.cluster_resources()})")
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
        for ref in ready:
            job, group = pending.pop(ref)
            result = _collect(ref, job, inbox, info)
            remove_placement_group(group)
            report.results.append(result)
            detail = f"in {result.wall_s:.1f} s, {result.preemptions} preemptions -> {result.bundle}"
            progress.end_job(job.name, result.status, detail + (f" ({result.error})" if result.error else ""))
    return report


def _collect(ref: Any, job: JobSpec, inbox: CollectorInbox, info: dict[str, Any]) -> JobResult:
    """A finished task's result, or for a task whose worker died, the partial/failed run the driver records."""
    import ray

    try:
        out = ray.get(ref)
        return JobResult(out["run_id"], out["status"], Path(out["where"]), out["wall_s"], out["preemptions"], None,
                         out["error"])  # fmt: skip
    except (ray.exceptions.RayError, OSError) as exc:
        reason = f"Ray worker lost: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return _record_lost(job, inbox, info, reason)


def _record_lost(job: JobSpec, inbox: CollectorInbox, info: dict[str, Any], reason: str) -> JobResult:
    """Finalise the dead worker's samples as ``partial`` when its work dir is reachable; else a ``failed`` run."""
    work_dir = inbox.local / WORK_DIR_NAME / job.run_id
    deadline = time.monotonic() + 10
    while work_dir.is_dir() and time.monotonic() < deadline:  # the dead pid must be gone before recover takes it
        bundles = [b for b in recover(inbox.local) if b.name == job.run_id]
        if bundles:
            where = inbox.publish(bundles[0], "partial")
            return JobResult(job.run_id, "partial", Path(where), 0.0, 0, None, reason)
        time.sleep(0.5)
    result = record_failure(job, inbox.local, reason, None, info)
    where = inbox.publish(result.bundle, "failed")
    return JobResult(job.run_id, "failed", Path(where), 0.0, 0, None, reason)
