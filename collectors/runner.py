"""Run a sweep: recover what a killed collector left, skip completed points, run the rest, never stop on a failure."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.job import EngineSession, JobResult, record_failure
from collectors.progress import SweepProgress
from collectors.recorder import ledger, recover
from collectors.replicas import ReplicaPool
from collectors.spec import JobSpec
from collectors.sweep import Sweep


@dataclass
class SweepReport:
    results: list[JobResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    recovered: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status != "complete"]


def completed_run_ids(inbox: Path) -> set[str]:
    """Run ids already complete: a bundle in the inbox (or its ``done/``, where the store moves what it ingested)
    says so, or the collector's ledger does."""
    done = {run_id for run_id, status in ledger(inbox).items() if status == "complete"}
    if inbox.is_dir():
        for run_file in [*inbox.glob("*/run.json"), *inbox.glob("done/*/run.json")]:
            try:
                if json.loads(run_file.read_text(encoding="utf-8")).get("status") == "complete":
                    done.add(run_file.parent.name)
            except (OSError, json.JSONDecodeError):
                continue
    return done


def run_sweep(
    sweep: Sweep,
    inbox: Path,
    progress: SweepProgress | None = None,
    device_profile: dict[str, Any] | None = None,
    publish: Callable[[Path, str], str] | None = None,
    already_done: set[str] | frozenset[str] = frozenset(),
) -> SweepReport:
    """Run every point of ``sweep`` not yet complete in ``inbox`` (or in ``already_done``, e.g. a bucket's listing);
    each writes one bundle (complete or failed), handed to ``publish(bundle, status)`` when given (an upload)."""
    report = SweepReport(recovered=recover(inbox))
    info = {"name": sweep.name, "experiment": sweep.experiment, "title": sweep.title, "target": sweep.target}
    done = completed_run_ids(inbox) | set(already_done)
    if publish is not None:
        for bundle in report.recovered:
            publish(bundle, "partial")
    progress = progress or SweepProgress(len(sweep.jobs), enabled=False)
    for bundle in report.recovered:
        progress.message(f"recovered a killed job's samples as a partial run: {bundle}")
    for engine_params, jobs in sweep.engine_groups():
        todo = [job for job in jobs if job.run_id not in done]
        for job in jobs:
            if job.run_id in done:
                report.skipped.append(job.run_id)
                progress.end_job(job.name, "skipped", "(already complete)")
        if not todo:
            continue
        progress.start_job(todo[0].name)
        try:
            session: EngineSession | ReplicaPool = (
                ReplicaPool(engine_params) if engine_params.dp > 1 else EngineSession(engine_params)
            )
        except Exception as exc:
            error = f"vLLM engine did not start: {type(exc).__name__}: {exc}"
            for job in todo:
                _finish(report, progress, job, record_failure(job, inbox, error, device_profile, info), publish)
            continue
        try:
            for i, job in enumerate(todo):
                if i:
                    progress.start_job(job.name)
                result = session.run(job, inbox, progress.job_progress, device_profile, info)
                _finish(report, progress, job, result, publish)
        finally:
            session.close()
    return report


def _finish(
    report: SweepReport,
    progress: SweepProgress,
    job: JobSpec,
    result: JobResult,
    publish: Callable[[Path, str], str] | None = None,
) -> None:
    report.results.append(result)
    where = publish(result.bundle, result.status) if publish is not None else result.bundle
    detail = f"in {result.wall_s:.1f} s, {result.preemptions} preemptions -> {where}"
    if result.error:
        detail += f" ({result.error})"
    progress.end_job(job.name, result.status, detail)
