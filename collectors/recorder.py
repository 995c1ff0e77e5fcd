"""Crash-safe recording of a job: samples are appended to JSON-lines files in a work directory as they arrive.

SIGKILL cannot be caught, so nothing may wait for a clean exit: every sample is written and flushed to the kernel
the moment it is taken. ``finalise`` turns a work directory into a run bundle (``engine.bundle.write_bundle``);
``recover`` does the same for work directories whose collector died, marking their runs ``partial``.

Layout of ``<inbox>/.work/<run_id>/``: ``meta.json`` (run metadata, status ``running``, the collector's pid and
host), ``plan.json`` (the request list), ``engine.jsonl``, ``requests.jsonl``, ``gpus.jsonl``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa

from engine.bundle import ENGINE_SAMPLES, GPU_SAMPLES, REQUESTS, RUN_FIELDS, write_bundle

WORK_DIR_NAME = ".work"
LEDGER_NAME = ".collector-ledger.jsonl"
EXTRA_META_KEY = "collector"  # run.json extras: sweep, engine start-up, wall time, replica layout
ENGINE_COLUMNS = tuple(ENGINE_SAMPLES.names)
GPU_COLUMNS = tuple(GPU_SAMPLES.names)
REQUEST_EVENT_KEYS = ("first_scheduled_s", "first_token_s", "finished_s", "output_tokens", "num_preemptions")


class Recorder:
    """Appends samples to a job's work directory; each line is flushed when written (line-buffered files)."""

    def __init__(self, work_dir: Path, meta: dict[str, Any], plan: list[dict[str, Any]]) -> None:
        self.work_dir = work_dir
        if work_dir.exists():
            shutil.rmtree(work_dir)
        work_dir.mkdir(parents=True)
        self.meta = dict(meta)
        self.meta.update({"status": "running", "collector_pid": os.getpid(), "collector_host": socket.gethostname()})
        _write_json(work_dir / "plan.json", plan)
        self._write_meta()
        self._engine: TextIO = (work_dir / "engine.jsonl").open("a", buffering=1, encoding="utf-8")
        self._requests: TextIO = (work_dir / "requests.jsonl").open("a", buffering=1, encoding="utf-8")
        self._gpus: TextIO = (work_dir / "gpus.jsonl").open("a", buffering=1, encoding="utf-8")
        self._preemptions: TextIO = (work_dir / "preemptions.jsonl").open("a", buffering=1, encoding="utf-8")

    def update_meta(self, **values: Any) -> None:
        """Merge values into meta.json (written to a temp file and renamed, so a kill leaves the old or new one)."""
        self.meta.update(values)
        self._write_meta()

    def engine_sample(self, row: tuple[float, int, int, float, int, int, int]) -> None:
        """One engine sample in ENGINE_SAMPLES column order."""
        self._engine.write(json.dumps(row) + "\n")

    def request_event(self, request_id: str, **values: Any) -> None:
        """Facts about one request; later events for the same request override earlier ones."""
        self._requests.write(json.dumps({"request_id": request_id, **values}) + "\n")

    def gpu_sample(self, row: tuple[Any, ...]) -> None:
        """One per-GPU sample in GPU_SAMPLES column order."""
        self._gpus.write(json.dumps(row) + "\n")

    def preemption_event(self, t_s: float) -> None:
        """The scheduler's time of one preemption (seconds since the job's start)."""
        self._preemptions.write(json.dumps(t_s) + "\n")

    def close(self) -> None:
        for fh in (self._engine, self._requests, self._gpus, self._preemptions):
            fh.close()

    def _write_meta(self) -> None:
        _write_json(self.work_dir / "meta.json", self.meta)


class ReplicaWriter:
    """One DP replica's samples, appended to ``engine.r<k>.jsonl`` / ``requests.r<k>.jsonl`` of the run's work dir."""

    def __init__(self, work_dir: Path, replica: int) -> None:
        self.replica = replica
        self._engine: TextIO = (work_dir / f"engine.r{replica}.jsonl").open("a", buffering=1, encoding="utf-8")
        self._requests: TextIO = (work_dir / f"requests.r{replica}.jsonl").open("a", buffering=1, encoding="utf-8")
        self._preemptions: TextIO = (work_dir / f"preemptions.r{replica}.jsonl").open(
            "a", buffering=1, encoding="utf-8"
        )

    def engine_sample(self, row: tuple[float, int, int, float, int, int, int]) -> None:
        self._engine.write(json.dumps(row) + "\n")

    def request_event(self, request_id: str, **values: Any) -> None:
        self._requests.write(json.dumps({"request_id": request_id, **values}) + "\n")

    def preemption_event(self, t_s: float) -> None:
        self._preemptions.write(json.dumps(t_s) + "\n")

    def close(self) -> None:
        self._engine.close()
        self._requests.close()
        self._preemptions.close()


def merge_replica_samples(streams: list[list[list[Any]]]) -> list[list[Any]]:
    """One engine timeline from several replicas' timelines: at every replica's sample, the sum over replicas of
    their latest counts (KV usage: the mean, all pools being equal). A replica not yet sampled counts as idle; a row
    equal to the one before it (the replicas' opening samples at t = 0) is written once."""
    n = len(streams)
    latest: list[list[Any]] = [[0.0, 0, 0, 0.0, 0, 0, 0] for _ in range(n)]
    events = sorted((row[0], k, row) for k, rows in enumerate(streams) for row in rows if _row_ok(row, ENGINE_COLUMNS))
    merged = []
    for t_s, k, row in events:
        latest[k] = row
        sums = [
            t_s,
            sum(int(r[1]) for r in latest),
            sum(int(r[2]) for r in latest),
            round(sum(float(r[3]) for r in latest) / n, 6),
            sum(int(r[4]) for r in latest),
            sum(int(r[5]) for r in latest),
            sum(int(r[6]) for r in latest),
        ]
        if not merged or merged[-1] != sums:
            merged.append(sums)
    return merged


def retime_preemptions(
    rows: list[list[Any]], event_times_s: list[float], counted_total: int | None = None
) -> list[list[Any]]:
    """Cumulative preemptions at the scheduler's time stamps instead of when vLLM's counter caught up.

    Used only when the events account for every preemption the counter saw — the most the samples hold or
    ``counted_total``, the job's final counter, whichever is larger (then the totals agree at every sample after the
    counter caught up); otherwise the counter is kept as vLLM reported it.
    """
    if not rows or not event_times_s:
        return rows
    counted = max((int(r[6]) for r in rows if _row_ok(r, ENGINE_COLUMNS)), default=0)
    if len(event_times_s) < max(counted, counted_total or 0):
        return rows
    times = sorted(event_times_s)
    out = []
    i = 0
    for row in sorted((r for r in rows if _row_ok(r, ENGINE_COLUMNS)), key=lambda r: r[0]):
        while i < len(times) and times[i] <= row[0]:
            i += 1
        out.append([*row[:6], max(i, int(row[6]))])
    return out


def _preemption_times(work_dir: Path) -> list[float]:
    times: list[float] = []
    for path in [work_dir / "preemptions.jsonl", *sorted(work_dir.glob("preemptions.r*.jsonl"))]:
        times.extend(float(t) for t in _read_jsonl(path) if isinstance(t, int | float))
    return times


def finalise(work_dir: Path, inbox: Path, status: str, error: str | None = None) -> Path:
    """Build the run bundle from a work directory, write it into ``inbox`` atomically, then drop the work dir."""
    meta = json.loads((work_dir / "meta.json").read_text(encoding="utf-8"))
    plan = json.loads((work_dir / "plan.json").read_text(encoding="utf-8"))
    engine_rows = list(_read_jsonl(work_dir / "engine.jsonl"))
    replica_files = sorted(work_dir.glob("engine.r*.jsonl"), key=lambda p: int(p.name.split(".")[1][1:]))
    if replica_files:
        engine_rows += merge_replica_samples([list(_read_jsonl(p)) for p in replica_files])
    counted_total = (meta.get(EXTRA_META_KEY) or {}).get("preemptions_counted")
    engine_rows = retime_preemptions(
        engine_rows, _preemption_times(work_dir), counted_total if isinstance(counted_total, int) else None
    )
    gpu_rows = list(_read_jsonl(work_dir / "gpus.jsonl"))
    events: dict[str, dict[str, Any]] = {}
    for path in [work_dir / "requests.jsonl", *sorted(work_dir.glob("requests.r*.jsonl"))]:
        for event in _read_jsonl(path):
            if isinstance(event, dict) and "request_id" in event:
                events.setdefault(str(event["request_id"]), {}).update(event)

    engine_table = pa.Table.from_pylist(
        [dict(zip(ENGINE_COLUMNS, row, strict=True)) for row in engine_rows if _row_ok(row, ENGINE_COLUMNS)],
        schema=ENGINE_SAMPLES,
    )
    gpu_table = pa.Table.from_pylist(
        [dict(zip(GPU_COLUMNS, row, strict=True)) for row in gpu_rows if _row_ok(row, GPU_COLUMNS)],
        schema=GPU_SAMPLES,
    )
    request_rows = []
    for item in plan:
        ev = events.get(item["request_id"], {})
        request_rows.append(
            {
                "request_id": item["request_id"],
                "isl": item["isl"],
                "osl": item["osl"],
                "arrival_s": ev.get("arrival_s", item.get("arrival_s")),
                **{key: ev.get(key) for key in REQUEST_EVENT_KEYS},
            }
        )
    requests_table = pa.Table.from_pylist(request_rows, schema=REQUESTS)

    bundle_meta = {key: meta.get(key) for key in (*RUN_FIELDS, EXTRA_META_KEY) if key in meta}
    bundle_meta["status"] = status
    if error:
        bundle_meta["error"] = error
    elif status == "partial" and not bundle_meta.get("error"):
        bundle_meta["error"] = "the collector stopped before the batch finished; samples up to the stop are kept"
    missing = [k for k, (_, required, _) in RUN_FIELDS.items() if required and bundle_meta.get(k) is None]
    if missing:
        raise ValueError(f"{work_dir}: meta.json lacks required run field(s) {', '.join(missing)}")
    tables = {"engine_samples": engine_table, "requests": requests_table}
    if gpu_table.num_rows:
        tables["gpu_samples"] = gpu_table
    bundle = write_bundle(inbox, bundle_meta, tables)
    append_ledger(inbox, str(bundle_meta["run_id"]), status, error)
    shutil.rmtree(work_dir, ignore_errors=True)
    return bundle


def recover(inbox: Path, force: bool = False) -> list[Path]:
    """Turn the work directories of dead collectors on this host into ``partial`` bundles; return the bundles.

    A work directory whose collector is still alive, or that was written on another host sharing this storage, is
    left alone unless ``force`` (the other host's collector may still be running).
    """
    root = inbox / WORK_DIR_NAME
    if not root.is_dir():
        return []
    bundles = []
    for work_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        meta_path = work_dir / "meta.json"
        if not meta_path.is_file() or not (work_dir / "plan.json").is_file():
            continue
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not force:
            if meta.get("collector_host") != socket.gethostname():
                continue
            if _pid_alive(int(meta.get("collector_pid", -1))):
                continue
        bundles.append(finalise(work_dir, inbox, "partial", meta.get("error")))
    return bundles


def ledger(inbox: Path) -> dict[str, str]:
    """run_id -> last recorded status, from the inbox's ledger (bundles may be moved away by the store)."""
    path = inbox / LEDGER_NAME
    result: dict[str, str] = {}
    for entry in _read_jsonl(path):
        if isinstance(entry, dict) and "run_id" in entry:
            result[str(entry["run_id"])] = str(entry.get("status"))
    return result


def append_ledger(inbox: Path, run_id: str, status: str, error: str | None) -> None:
    with (inbox / LEDGER_NAME).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"run_id": run_id, "status": status, "error": error}) + "\n")


def _read_jsonl(path: Path) -> Iterator[Any]:
    """Lines of a JSON-lines file; a torn last line (a kill mid-write) is skipped."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def _row_ok(row: Any, columns: tuple[str, ...]) -> bool:
    return isinstance(row, list) and len(row) == len(columns)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
