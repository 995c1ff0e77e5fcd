"""Share one DuckDB file between processes: the dashboard, CLI reads, imports and collectors at once.

DuckDB's rule (duckdb.org/docs/2.0/connect/concurrency, checked for duckdb 2.0.1, the version installed): a
database file is opened either by one read-write process, or by any number of read-only processes, never both;
the second opener gets "Could not set lock on file". Inside one process the same file cannot be open with two
configurations (read-only and read-write) at once either. So no process may hold the file for its lifetime.

``SharedFile`` is how a process uses the file:

- Reads lease a read-only connection, shared by the process's threads (each query on its own cursor). The lease
  is closed once no query has used it for ``LINGER_S`` and is never handed to new queries after ``MAX_LEASE_S``,
  so a busy reader (the dashboard while someone browses) still leaves gaps for a writer. Opening cost 210-260 ms
  (median of 20 on this loaded 2-core host; a query on a held lease: 0.8 ms); lingering pays it once per burst
  of queries, not per query.
- Writes wait for the process's own readers, close the lease, open read-write, commit, close: the file is locked
  for the write only (an ingest: tens of ms to a few seconds).
- A turnstile (``<db>.turnstile``, an ``flock``) gives writers priority across processes: a writer holds it
  exclusively while it waits for the file and writes; a reader passes it (shared, released at once) before opening,
  so once a writer queues no new read lease starts and the lingering ones run out within ``MAX_LEASE_S``.
- Opening retries while another process holds DuckDB's lock, for at most ``lock_wait_s`` (default 30 s,
  ``$CLIFFSCOPE_DB_LOCK_WAIT_S``); then one StoreError says who holds it and what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

LINGER_S = 0.5
MAX_LEASE_S = 2.0
LOCK_WAIT_ENV = "CLIFFSCOPE_DB_LOCK_WAIT_S"
DEFAULT_LOCK_WAIT_S = 30.0


class LockTimeout(RuntimeError):
    """The file stayed locked by another process for longer than the caller may wait."""


def lock_wait_s() -> float:
    try:
        return float(os.environ.get(LOCK_WAIT_ENV, DEFAULT_LOCK_WAIT_S))
    except ValueError:
        return DEFAULT_LOCK_WAIT_S


def is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, duckdb.IOException) and ("lock" in text or "resource temporarily unavailable" in text)


def connect_with_retry(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect`` retried while another process holds the file's lock; LockTimeout after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    delay = 0.01
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if not is_lock_error(exc) or time.monotonic() + delay > deadline:
                if is_lock_error(exc):
                    raise LockTimeout(str(exc).splitlines()[0]) from None
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


class _Turnstile:
    """An ``flock`` beside the database: writers hold it exclusively, readers pass it (shared, released at once)."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".turnstile")

    @contextlib.contextmanager
    def hold(self, exclusive: bool, wait_s: float) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            deadline = time.monotonic() + wait_s
            mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
            while True:
                try:
                    fcntl.flock(fd, mode)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockTimeout(f"{self.path}: a writer kept the store busy") from None
                    time.sleep(0.01)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class SharedFile:
    """One process's access to a DuckDB file that other processes use too (see the module docstring)."""

    def __init__(self, path: Path, wait_s: float | None = None) -> None:
        self.path = path
        self.wait_s = lock_wait_s() if wait_s is None else wait_s
        self._turnstile = _Turnstile(path)
        self._cond = threading.Condition()
        self._lease: duckdb.DuckDBPyConnection | None = None
        self._lease_opened = 0.0
        self._readers = 0
        self._writers_waiting = 0
        self._writing = False
        self._last_used = 0.0
        self._reaper: threading.Thread | None = None
        self._closed = False

    @contextlib.contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection for one query (use a cursor of it); shared by this process's readers."""
        with self._cond:
            while self._writing or self._writers_waiting or self._lease_expired():
                if self._lease is not None and self._readers == 0:
                    self._close_lease()
                    continue
                self._cond.wait(0.05)
            if self._lease is None:
                with self._turnstile.hold(exclusive=False, wait_s=self.wait_s):
                    self._lease = connect_with_retry(self.path, read_only=True, wait_s=self.wait_s)
                self._lease_opened = time.monotonic()
                self._start_reaper()
            self._readers += 1
            lease = self._lease
        try:
            yield lease
        finally:
            with self._cond:
                self._readers -= 1
                self._last_used = time.monotonic()
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection held for one transaction, with writer priority across processes."""
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait(0.05)
                self._writing = True
            finally:
                self._writers_waiting -= 1
            self._close_lease()
        try:
            with self._turnstile.hold(exclusive=True, wait_s=self.wait_s):
                con = connect_with_retry(self.path, read_only=False, wait_s=self.wait_s)
                try:
                    yield con
                finally:
                    con.close()
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._close_lease()
            self._cond.notify_all()

    def _lease_expired(self) -> bool:
        return self._lease is not None and time.monotonic() - self._lease_opened > MAX_LEASE_S

    def _close_lease(self) -> None:
        if self._lease is not None:
            with contextlib.suppress(duckdb.Error):
                self._lease.close()
            self._lease = None

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(target=self._reap, name="cliffscope-store-lease", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        """Close the read lease once idle for LINGER_S (or past MAX_LEASE_S), so writers elsewhere get the file."""
        with self._cond:
            while self._lease is not None and not self._closed:
                idle = time.monotonic() - self._last_used
                if self._readers == 0 and (idle >= LINGER_S or self._lease_expired()):
                    self._close_lease()
                    break
                self._cond.wait(0.1)
