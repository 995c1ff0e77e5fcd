"""``Store``: the one object that opens cliffscope's DuckDB file.

DuckDB lets one process open a file read-write or many open it read-only. The dashboard and the CLI open the store
``shared`` (``engine.store.access``): reads lease a read-only connection, writes open read-write for one
transaction, so a dashboard, CLI reads and imports work on one file at once. ``Store(path)`` without ``shared``
holds the file for its lifetime (tests, scripts). Every query runs on its own cursor, so threads never share one;
writes are serialised. Reads see committed data only, so a reader never sees half an ingest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from engine.formats import DEFAULT_LIMITS, Limits, ValidationError, read_path, validate_run
from engine.formats.accepted import UPLOAD_SUFFIXES
from engine.objectstore import is_s3_url
from engine.store import calibrations, queries
from engine.store.access import LOCK_WAIT_ENV, LockTimeout, SharedFile, lock_wait_s
from engine.store.ingest import IngestReport, delete_run_rows, write_runs
from engine.store.schema import CALIBRATIONS_SINCE, SCHEMA_VERSION, SchemaError, current_version, ensure_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DB = REPO_ROOT / "data" / "cliffscope.duckdb"
DEFAULT_SEED_DIR = REPO_ROOT / "data" / "runs"
DEFAULT_INBOX = REPO_ROOT / "data" / "inbox"  # git-ignored; collectors drop bundles here
DB_ENV = "CLIFFSCOPE_DB"
INBOX_ENV = "CLIFFSCOPE_INBOX"


class StoreError(RuntimeError):
    """The database cannot be opened or used; the message names the file and what to do."""


def default_inbox() -> Path | str:
    """``$CLIFFSCOPE_INBOX`` if set (a directory or ``s3://bucket/prefix``), else ``data/inbox`` in the repository
    (git-ignored)."""
    env = os.environ.get(INBOX_ENV)
    if env and is_s3_url(env):
        return env
    return Path(env).expanduser() if env else DEFAULT_INBOX


def default_db_path() -> Path:
    """``$CLIFFSCOPE_DB`` if set, else ``data/cliffscope.duckdb`` in the repository (git-ignored)."""
    env = os.environ.get(DB_ENV)
    return Path(env).expanduser() if env else DEFAULT_DB


class Store:
    """cliffscope's telemetry store over one DuckDB file (or ``":memory:"``)."""

    def __init__(self, path: str | Path, *, limits: Limits = DEFAULT_LIMITS, shared: bool = False) -> None:
        """Open (creating or migrating) the database at ``path``.

        ``shared=False``: this object holds the file read-write for its lifetime (tests, one-off scripts).
        ``shared=True`` (the dashboard and the CLI): no connection is held; reads lease a read-only one and writes
        open read-write for one transaction (``engine.store.access``), so other processes can read and write too.
        """
        self.path = Path(path) if str(path) != ":memory:" else None
        self.limits = limits
        self.created = self.path is None or not self.path.exists()
        self._write_lock = threading.Lock()
        self.seed_reports: list[IngestReport] = []
        self.seed_calibration_notes: list[str] = []
        self._shared: SharedFile | None = None
        self._held_write: tuple[int, duckdb.DuckDBPyConnection] | None = None  # (thread, connection) while batching
        self._con: duckdb.DuckDBPyConnection | None = None
        target = ":memory:" if self.path is None else str(self.path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if shared and self.path is not None:
                self._shared = SharedFile(self.path)
                self.schema_found, self.schema_version = self._ensure_shared_schema()
                return
            self._con = duckdb.connect(target)
        except LockTimeout as exc:
            raise StoreError(_locked_message(target, str(exc))) from None
        except SchemaError as exc:
            raise StoreError(_foreign_message(target, str(exc))) from None
        except duckdb.IOException as exc:
            message = str(exc).splitlines()[0]
            if "lock" in message.lower():
                raise StoreError(_locked_message(target, message)) from None
            raise StoreError(_foreign_message(target, message)) from None
        except duckdb.Error as exc:
            raise StoreError(f"{target}: cannot open ({str(exc).splitlines()[0]})") from None
        try:
            with self._write_lock:
                self.schema_found, self.schema_version = ensure_schema(self._con)
        except SchemaError as exc:
            self._con.close()
            raise StoreError(_foreign_message(target, str(exc))) from None

    def _ensure_shared_schema(self) -> tuple[int | None, int]:
        """Read the schema version read-only; open read-write only to create or migrate (once per database)."""
        if not self.created:
            with self._shared.read() as con:  # type: ignore[union-attr]
                cur = con.cursor()
                try:
                    found = current_version(cur)
                finally:
                    cur.close()
            if found == SCHEMA_VERSION:
                return found, found
        with self._shared.write() as con:  # type: ignore[union-attr]
            return ensure_schema(con)

    @contextlib.contextmanager
    def batch_writes(self) -> Iterator[None]:
        """Make this thread's writes inside the block share one read-write open (a shared store's first-start import
        of the bundled runs: one lock instead of one per bundle, 6 s instead of 13 s on this host)."""
        if self._shared is None or self._held_write is not None:
            yield
            return
        try:
            with self._shared.write() as con:
                self._held_write = (threading.get_ident(), con)
                try:
                    yield
                finally:
                    self._held_write = None
        except LockTimeout as exc:
            raise StoreError(_locked_message(str(self.path), str(exc))) from None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one write: a cursor of the held one, or (shared) a brief read-write open."""
        held = self._held_write
        if held is not None and held[0] == threading.get_ident():
            cur = held[1].cursor()
            try:
                yield cur
            finally:
                cur.close()
            return
        if self._shared is not None:
            try:
                with self._shared.write() as con:
                    yield con
            except LockTimeout as exc:
                raise StoreError(_locked_message(str(self.path), str(exc))) from None
            return
        with self._write_lock:
            cur = self._con.cursor()  # type: ignore[union-attr]
            try:
                yield cur
            finally:
                cur.close()

    # ------------------------------------------------------------------------------------------------ lifecycle

    @classmethod
    def open_default(
        cls, path: str | Path | None = None, *, seed_dir: Path | None = None, shared: bool = True
    ) -> Store:
        """Open (or create) the default database; on first creation ingest every bundle under ``data/runs/`` and the
        calibrations fitted on them (``data/runs/calibrations.json``, written by ``calibrate --export``). A database
        from before calibrations were part of the schema (< v3) gets the shipped calibrations when it is migrated:
        each loads only where the database holds exactly the runs it was fitted on.

        What happened to each bundled run is in ``store.seed_reports``, to each calibration in
        ``store.seed_calibration_notes``; a bad bundle or a stale calibration never stops the app starting.
        """
        store = cls(Path(path) if path is not None else default_db_path(), shared=shared)
        seed = seed_dir or DEFAULT_SEED_DIR
        with store.batch_writes():
            if store.created:
                store.seed_reports = store.ingest_many(_bundles_under(seed))
            if store.created or (store.schema_found is not None and store.schema_found < CALIBRATIONS_SINCE):
                shipped = seed / calibrations.ARTEFACT_NAME
                if shipped.is_file():
                    store.seed_calibration_notes = store.import_calibrations(
                        shipped, origin=f"shipped with the bundled runs ({_display_path(shipped)})"
                    )
        return store

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()
        if self._con is not None:
            self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A fresh cursor for one query (never share one between threads); not offered by a shared store."""
        if self._con is None:
            raise StoreError("a shared store holds no connection: use its query methods")
        return self._con.cursor()

    def _read(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        held = self._held_write
        if self._shared is None or (held is not None and held[0] == threading.get_ident()):
            cur = (self._con if held is None else held[1]).cursor()  # type: ignore[union-attr]
            try:
                return fn(cur, *args, **kwargs)
            finally:
                cur.close()
        try:
            with self._shared.read() as con:
                cur = con.cursor()
                try:
                    return fn(cur, *args, **kwargs)
                finally:
                    cur.close()
        except LockTimeout as exc:
            raise StoreError(_locked_message(str(self.path), str(exc))) from None

    # --------------------------------------------------------------------------------------------------- ingest

    def ingest(
        self,
        path: str | Path,
        *,
        overrides: Mapping[str, Any] | None = None,
        replace: bool = False,
        display: str | None = None,
    ) -> IngestReport:
        """Validate every run in one file (or bundle directory), then write them in one transaction.

        Raises ``ValidationError`` (nothing written) when anything is wrong. Ingesting the same content again
        writes nothing and reports the run as ``unchanged``; different content under an existing run id is refused
        unless ``replace``.
        """
        path = Path(path)
        display = display or path.name
        parsed = read_path(path, self.limits, display=display, overrides=overrides)
        valid = []
        for run in parsed:
            valid.append(validate_run(run, self.limits))
        ids = [run.meta["run_id"] for run in valid]
        if len(set(ids)) != len(ids):
            duplicate = next(i for i in ids if ids.count(i) > 1)
            raise ValidationError.one(
                display, f"run id {duplicate!r} appears twice in one file", "give each run its own run_id"
            )
        with self._writing() as cur:
            outcomes = write_runs(cur, valid, replace=replace)
        return IngestReport(file=display, runs=outcomes)

    def try_ingest(self, path: str | Path, **kwargs: Any) -> IngestReport:
        """Like ``ingest`` but a rejected file comes back as a report with ``error`` set."""
        display = kwargs.get("display") or Path(path).name
        try:
            return self.ingest(path, **kwargs)
        except ValidationError as exc:
            return IngestReport(file=display, error=exc)

    def ingest_many(self, paths: Iterable[str | Path], **kwargs: Any) -> list[IngestReport]:
        return [self.try_ingest(path, **kwargs) for path in paths]

    def ingest_bytes(
        self, data: bytes, filename: str, *, overrides: Mapping[str, Any] | None = None, replace: bool = False
    ) -> IngestReport:
        """Ingest an upload. The name is only shown in messages and picks the reader by its extension; the bytes go
        to a private temporary file with a fixed name."""
        suffix = Path(filename).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            suffix = ".bin"
        with tempfile.TemporaryDirectory(prefix="cliffscope-upload-") as tmp:
            target = Path(tmp) / f"upload{suffix}"
            target.write_bytes(data)
            return self.ingest(target, overrides=overrides, replace=replace, display=filename)

    def ingest_inbox(self, inbox: str | Path | None = None) -> list[IngestReport]:
        """Ingest the complete bundles that appeared in ``inbox`` (default: ``default_inbox()``). Collectors write
        ``.tmp-*`` then rename, so hidden entries are still being written and are left alone.

        Each bundle is moved to ``inbox/done/`` or ``inbox/rejected/`` (with ``<name>.reason.txt`` saying why).
        ``s3://bucket/prefix`` ingests the ``<prefix>/*.zip`` bundles there the same way (``engine.objectstore``).
        """
        inbox = inbox if inbox is not None else default_inbox()
        if is_s3_url(str(inbox)):
            from engine.objectstore import S3Inbox, ingest_s3_inbox

            return ingest_s3_inbox(S3Inbox.parse(str(inbox)), lambda path, name: self.try_ingest(path, display=name))
        inbox = Path(inbox)
        done, rejected = inbox / "done", inbox / "rejected"
        reports = []
        if not inbox.is_dir():
            return reports
        for entry in sorted(inbox.iterdir()):
            if entry.name.startswith(".") or entry.name in ("done", "rejected"):
                continue
            if not (entry.is_dir() or entry.suffix.lower() == ".zip"):
                continue
            report = self.try_ingest(entry)
            target_dir = done if report.ok else rejected
            target_dir.mkdir(exist_ok=True)
            target = _free_name(target_dir / entry.name)
            shutil.move(str(entry), target)
            if not report.ok:
                target.with_name(target.name + ".reason.txt").write_text(str(report.error) + "\n")
            reports.append(report)
        return reports

    def delete_run(self, run_id: str) -> bool:
        """Delete a run and all its rows; returns whether it existed."""
        with self._writing() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                existed = delete_run_rows(cur, run_id)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return existed

    # --------------------------------------------------------------------------------------------------- queries

    def runs(
        self,
        *,
        model: str | None = None,
        device: str | None = None,
        layout: str | Sequence[int] | None = None,
        source: str | None = None,
        status: str | None = None,
    ) -> pl.DataFrame:
        """The runs list (newest first), filtered; one row per run with its layout and row counts."""
        return self._read(queries.runs_list, model=model, device=device, layout=layout, source=source, status=status)

    def run_meta(self, run_id: str) -> dict[str, Any] | None:
        return self._read(queries.run_meta, run_id)

    def published_record(self, run_id: str) -> dict[str, Any] | None:
        """A published run's source, quotes, flags and figures as stored; None for a measured or uploaded run."""
        return self._read(queries.published_record, run_id)

    def published_runs(self, kind: str | None = None) -> pl.DataFrame:
        """Every published run (optionally one kind: startup | bench | paper) with its layout and source."""
        return self._read(queries.published_list, kind)

    def timeline(self, run_id: str, max_points: int = 1000) -> pl.DataFrame:
        return self._read(queries.timeline, run_id, max_points)

    def timelines(self, run_ids: Sequence[str], max_points: int = 1000, align: str = "start") -> pl.DataFrame:
        """Several runs' timelines stacked (long form) for comparison.

        ``align="start"``: t_s is seconds since each run's start. ``align="cliff"``: t_s is seconds since each run's
        first preemption (runs without one are left out), so cliffs line up.
        """
        if align not in ("start", "cliff"):
            raise ValueError("align must be 'start' or 'cliff'")
        frames = []
        for run_id in run_ids:
            frame = self.timeline(run_id, max_points)
            if align == "cliff":
                summary = self.measured_summary(run_id)
                onset = None if summary is None else summary["cliff_onset_s"]
                if onset is None:
                    continue
                frame = frame.with_columns(pl.col("t_s") - onset)
            frames.append(frame)
        if not frames:
            return self.timeline("", max_points)
        return pl.concat(frames)

    def gpu_timeline(self, run_id: str, max_points: int = 1000) -> pl.DataFrame:
        return self._read(queries.gpu_timeline, run_id, max_points)

    def engine_samples(self, run_id: str) -> pl.DataFrame:
        return self._read(queries.engine_samples, run_id)

    def requests(self, run_id: str) -> pl.DataFrame:
        return self._read(queries.requests, run_id)

    def request_distribution(self, run_id: str, metric: str) -> pl.DataFrame:
        return self._read(queries.request_distribution, run_id, metric)

    def request_percentiles(
        self, run_ids: Sequence[str], percentiles: Sequence[float] = (0.5, 0.9, 0.99)
    ) -> pl.DataFrame:
        return self._read(queries.request_percentiles, run_ids, percentiles)

    def request_lengths(self, run_id: str) -> np.ndarray:
        return self._read(queries.request_lengths, run_id)

    def measured_summary(self, run_id: str) -> dict[str, Any] | None:
        return self._read(queries.measured_summary, run_id)

    def table_counts(self) -> dict[str, int]:
        return self._read(queries.table_counts)

    # ------------------------------------------------------------------------------ calibrations (issue #6)

    def save_calibration(self, record: dict[str, Any]) -> str:
        """Store a fitted calibration (engine.fidelity.calibrate.FitResult.as_record(), plus ``origin``: how it got
        here); returns its id, a hash of its content."""
        with self._writing() as cur:
            return calibrations.save(cur, record)

    def calibration_artefact(self, records: list[dict[str, Any]], about: str) -> dict[str, Any]:
        """Fitted records as ``calibrate --export`` writes them, each with its runs' content hashes."""
        return self._read(calibrations.artefact, records, about)

    def import_calibrations(self, path: str | Path, *, origin: str) -> list[str]:
        """Load an exported calibrations file: each calibration whose runs are here with the content it was fitted
        on is stored with ``origin``; one line per calibration says what happened. An unreadable file is a line too.
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            return [f"{path}: not loaded ({exc})"]
        with self._writing() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                notes = calibrations.load_artefact(cur, data, origin)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return notes

    def calibrations(self, device_key: str | None = None, vllm_version: str | None = None) -> pl.DataFrame:
        return self._read(calibrations.listing, device_key, vllm_version)

    def calibration(self, calibration_id: str) -> dict[str, Any] | None:
        return self._read(calibrations.get, calibration_id)

    def latest_calibration(self, device_key: str, vllm_version: str | None = None) -> dict[str, Any] | None:
        return self._read(calibrations.latest, device_key, vllm_version)


def open_store(path: str | Path | None = None, *, seed_dir: Path | None = None) -> Store:
    """The dashboard's entry: the default database (created and seeded with the bundled runs on first use), opened
    shared so the CLI, imports and other dashboards can use the file at the same time."""
    return Store.open_default(path, seed_dir=seed_dir)


def _locked_message(target: str, detail: str) -> str:
    return (
        f"{target}: another process kept the database locked for longer than {lock_wait_s():.0f} s ({detail}); "
        "it is usually a long import or an old cliffscope holding the file open: try again when it has finished, "
        f"raise {LOCK_WAIT_ENV}, or point --db / CLIFFSCOPE_DB at another file"
    )


def _foreign_message(target: str, detail: str) -> str:
    return (
        f"{target}: not a cliffscope database ({detail}); it was left untouched — move it aside or point --db / "
        "CLIFFSCOPE_DB at another file"
    )


def _display_path(path: Path) -> str:
    """A path as a user reads it: relative to the repository when inside it (data/runs/calibrations.json)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _bundles_under(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if (entry / "run.json").is_file() or (entry.is_file() and entry.suffix.lower() == ".zip"):
            found.append(entry)
    return found


def _free_name(target: Path) -> Path:
    if not target.exists():
        return target
    for index in range(1, 10_000):
        candidate = target.with_name(f"{target.name}.{index}")
        if not candidate.exists():
            return candidate
    raise StoreError(f"{target.parent}: too many entries named {target.name}")
