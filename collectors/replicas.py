"""Data parallelism as the paper measures it: DP independent vLLM engines, each with its own scheduler and KV pool.

Each replica is a spawned process holding one EngineSession (its TP/PP workers are vLLM's own), pinned to its own
devices: ``CUDA_VISIBLE_DEVICES`` on GPU hosts, one CPU core (``VLLM_CPU_OMP_THREADS_BIND``) here. Requests are
dealt round-robin, as vLLM's DP load balancer spreads a batch that arrives at once. All replicas start the batch at
one shared monotonic instant and append their samples to their own files in the run's work directory; the bundle's
engine timeline is the sum over replicas (KV usage: their mean, every pool being the same size); which replica served
each request, and each replica's preemptions and first preemption, are in run.json's ``collector`` entry, with their
sum as ``preemptions_counted`` (the guard of the re-timed counter, as for a single job).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from collectors.job import (
    PREEMPTION_TIMES_NOTE,
    EngineSession,
    JobResult,
    PlannedRequest,
    ProgressFn,
    _first,
    _iso,
    collector_extras,
    drive_batch,
    plan_requests,
    record_failure,
    start_gpu_sampler,
    stop_gpu_sampler,
)
from collectors.recorder import WORK_DIR_NAME, Recorder, ReplicaWriter, finalise
from collectors.spec import EngineParams, JobSpec

START_DELAY_S = 0.5  # time for every replica to receive the plan before the shared start instant


def device_assignment(params: EngineParams, replica: int) -> dict[str, str]:
    """Environment that pins a replica to its own devices."""
    per_replica = params.tp * params.pp
    if _cuda_count() > 0:
        first = replica * per_replica
        return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(first, first + per_replica))}
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if params.tp * params.pp > 1 or params.dp > len(cores):
        return {}
    # One core per replica: vLLM's default ("auto") would put every replica on the same first core.
    return {"VLLM_CPU_OMP_THREADS_BIND": str(cores[replica % len(cores)])}


class ReplicaPool:
    """``dp`` started engines; run several jobs on them to pay the start-up once."""

    def __init__(self, params: EngineParams) -> None:
        self.params = params
        ctx = mp.get_context("spawn")
        per_replica = dataclasses.replace(params, dp=1)
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for k in range(params.dp):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_replica_main,
                args=(k, per_replica, device_assignment(params, k), child, os.getpid()),
                name=f"cliffscope-replica-{k}",
            )
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        self.ready: list[dict[str, Any]] = []
        errors = []
        for k, conn in enumerate(self.conns):
            msg = _recv(conn, self.procs[k])
            if msg.get("kind") == "ready":
                self.ready.append(msg)
            else:
                errors.append(f"replica {k}: {msg.get('error', 'died during start-up')}")
        if errors:
            self.close()
            raise RuntimeError("; ".join(errors))
        self.startup_s = max(m["startup_s"] for m in self.ready)

    def run(
        self,
        job: JobSpec,
        inbox: Path,
        progress: ProgressFn | None = None,
        device_profile: dict[str, Any] | None = None,
        sweep_info: dict[str, Any] | None = None,
    ) -> JobResult:
        from collectors.job import _device_name, job_meta

        plan = plan_requests(job)
        first = self.ready[0]
        model_config = first["model_config"]
        meta = job_meta(job, model_config, _device_name(job.engine.device), device_profile) | {
            "max_model_len": first["max_model_len"],
            "block_size": first["block_size"],
            "kv_capacity_tokens": first["kv_capacity_tokens"],
            "kv_blocks": first["kv_blocks"],
        }
        meta["notes"] = meta["notes"].replace(
            "Measured by cliffscope's collector:",
            f"Measured by cliffscope's collector, DP={job.engine.dp} as independent engines "
            f"(start-up {self.startup_s:.1f} s):",
        )
        shares = [[p for i, p in enumerate(plan) if i % job.engine.dp == k] for k in range(job.engine.dp)]
        extras = collector_extras(job, sweep_info) | {
            "engine_startup_s": round(self.startup_s, 3),
            "replica_of_request": {p.request_id: k for k, share in enumerate(shares) for p in share},
            "replica_devices": [device_assignment(self.params, k) for k in range(job.engine.dp)],
        }
        meta["collector"] = extras
        work_dir = inbox / WORK_DIR_NAME / job.run_id
        recorder = Recorder(work_dir, meta, [dataclasses.asdict(p) for p in plan])
        t0_wall = time.time() + START_DELAY_S
        t0_mono = time.monotonic() + START_DELAY_S
        recorder.update_meta(run_t0_wall=t0_wall, run_t0_monotonic=t0_mono, created_at=_iso(t0_wall))
        gpus = start_gpu_sampler(job, recorder, t0_mono)
        for k, conn in enumerate(self.conns):
            conn.send(
                {
                    "kind": "run",
                    "job": job,
                    "share": shares[k],
                    "work_dir": str(work_dir),
                    "t0_wall": t0_wall,
                    "t0_mono": t0_mono,
                }
            )
        state = {k: (0, 0) for k in range(job.engine.dp)}  # finished, preemptions
        done: dict[int, dict[str, Any]] = {}
        while len(done) < len(self.conns):
            for k, conn in enumerate(self.conns):
                if k in done:
                    continue
                if not self.procs[k].is_alive() and not conn.poll():
                    error = f"replica {k} process died"
                    # preemptions: its last progress report, a lower bound rather than its final counter
                    done[k] = {"kind": "done", "error": error, "preemptions": state[k][1], "died": True}
                    continue
                while conn.poll():
                    msg = conn.recv()
                    if msg["kind"] == "progress":
                        state[k] = (msg["finished"], msg["preemptions"])
                    elif msg["kind"] == "done":
                        done[k] = msg
                        break
            if progress is not None:
                progress(
                    sum(s[0] for s in state.values()),
                    len(plan),
                    time.monotonic() - t0_mono,
                    sum(s[1] for s in state.values()),
                )
            time.sleep(0.2)
        wall_s = max(0.0, time.monotonic() - t0_mono)
        gpu_extras = stop_gpu_sampler(gpus)
        recorder.close()
        errors = [f"replica {k}: {m['error']}" for k, m in sorted(done.items()) if m.get("error")]
        hooked = all(m["preemption_times_hooked"] for m in self.ready)
        extras = replica_preemption_extras(done, hooked)
        # run.json must hold the counted total before finalise: it guards the re-timing of the merged counter
        recorder.update_meta(collector=recorder.meta["collector"] | gpu_extras | {"wall_s": round(wall_s, 3)} | extras)
        status = "failed" if errors else "complete"
        bundle = finalise(work_dir, inbox, status, "; ".join(errors) or None)
        preemptions = sum(extras["replica_preemptions"])
        first = extras["first_preemption_s"]
        return JobResult(job.run_id, status, bundle, wall_s, preemptions, first, "; ".join(errors) or None)

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send({"kind": "stop"})
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)

    def __enter__(self) -> ReplicaPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def replica_preemption_extras(done: dict[int, dict[str, Any]], times_hooked: bool) -> dict[str, Any]:
    """run.json ``collector`` entries on preemptions from each replica's final report (``done`` by replica index).

    ``preemptions_counted`` is the sum of the replicas' final vLLM counters, as a single job records its own; it is
    left out when a replica died before reporting (its last progress report is only a lower bound), so the
    re-timing guard falls back to the counts the samples hold.
    """
    order = sorted(done)
    firsts = [done[k]["first_preemption_s"] for k in order if done[k].get("first_preemption_s") is not None]
    counts = [int(done[k].get("preemptions", 0)) for k in order]
    extras: dict[str, Any] = {
        "first_preemption_s": min(firsts) if firsts else None,
        "preemption_times": PREEMPTION_TIMES_NOTE if times_hooked else "vLLM's counter",
        "replica_first_preemption_s": [done[k].get("first_preemption_s") for k in order],
        "replica_preemptions": counts,
    }
    if not any(done[k].get("died") for k in order):
        extras["preemptions_counted"] = sum(counts)  # vLLM's counters at the job's end, summed over replicas
    return extras


def run_replicated(
    job: JobSpec,
    inbox: Path,
    progress: ProgressFn | None = None,
    device_profile: dict[str, Any] | None = None,
    sweep_info: dict[str, Any] | None = None,
) -> JobResult:
    """One DP job on a fresh pool of replicas (sweeps keep a pool across jobs with equal engine parameters)."""
    try:
        pool = ReplicaPool(job.engine)
    except Exception as exc:
        return record_failure(job, inbox, f"vLLM replicas did not start: {exc}", device_profile, sweep_info)
    with pool:
        return pool.run(job, inbox, progress, device_profile, sweep_info)


def _replica_main(replica: int, params: EngineParams, env: dict[str, str], conn: Connection, parent_pid: int) -> None:
    """A replica process: start one engine, then run the shares of jobs it is sent until told to stop."""
    os.environ.update(env)
    try:
        session = EngineSession(params)
    except Exception as exc:
        conn.send({"kind": "error", "error": f"{type(exc).__name__}: {exc}"})
        return
    from collectors.telemetry import CollectorStatLogger, StepTelemetry

    conn.send(
        {
            "kind": "ready",
            "startup_s": session.startup_s,
            "model_config": session.model_config,
            "max_model_len": session.max_model_len,
            "block_size": session.block_size,
            "kv_capacity_tokens": session.kv_capacity_tokens,
            "kv_blocks": session.kv_blocks,
            "preemption_times_hooked": session.preemption_times_hooked,
        }
    )
    try:
        while True:
            msg = conn.recv()
            if msg["kind"] != "run":
                break
            job: JobSpec = msg["job"]
            share: list[PlannedRequest] = msg["share"]
            writer = ReplicaWriter(Path(msg["work_dir"]), replica)
            telemetry = StepTelemetry(writer, msg["t0_mono"])
            CollectorStatLogger.active = telemetry if job.sample_engine else None
            error = None
            time.sleep(max(0.0, msg["t0_mono"] - time.monotonic()))
            report = _ProgressToParent(conn, parent_pid)

            try:
                drive_batch(
                    session.engine,
                    share,
                    session.vocab_size,
                    job.seed,
                    msg["t0_wall"],
                    msg["t0_mono"],
                    writer,
                    report,
                    lambda t=telemetry: t.preemptions_total,
                )
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            finally:
                CollectorStatLogger.active = None
                writer.close()
            conn.send(
                {
                    "kind": "done",
                    "error": error,
                    "preemptions": telemetry.preemptions_total,
                    "first_preemption_s": _first(telemetry.first_preemption_event_s, telemetry.first_preemption_s),
                }
            )
    except (EOFError, OSError):
        pass
    finally:
        session.close()


class _ProgressToParent:
    """A replica's progress callback: forwards to the collector at most every 0.5 s, stops if it has died."""

    def __init__(self, conn: Connection, parent_pid: int) -> None:
        self.conn = conn
        self.parent_pid = parent_pid
        self.last_s = -1.0

    def __call__(self, finished: int, total: int, elapsed_s: float, preemptions: int) -> None:
        if os.getppid() != self.parent_pid:
            raise RuntimeError("the collector that started this replica is gone")
        if elapsed_s - self.last_s >= 0.5 or finished == total:
            self.last_s = elapsed_s
            self.conn.send({"kind": "progress", "finished": finished, "preemptions": preemptions})


def _recv(conn: Connection, proc: Any) -> dict[str, Any]:
    while not conn.poll(0.5):
        if not proc.is_alive():
            return {"kind": "error", "error": f"exited with code {proc.exitcode} before it was ready"}
    try:
        return conn.recv()
    except EOFError:
        return {"kind": "error", "error": "closed its pipe during start-up"}


def _cuda_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:
        return 0
