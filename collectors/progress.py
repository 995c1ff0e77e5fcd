"""Progress bars on stderr with tqdm: the sweep (jobs done of all) and the running job (requests finished).

tqdm redraws in place on a terminal and, where stderr is a file or a CI log, is throttled to one line every few
seconds (``mininterval``) so logs stay readable.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm


def _is_tty(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


class SweepProgress:
    """Two bars: ``sweep`` (jobs) and ``job`` (requests of the running job, with its preemptions so far)."""

    def __init__(self, total_jobs: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total_jobs = total_jobs
        self.jobs_done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._interval = 0.5 if _is_tty(self.stream) else 5.0
        self._sweep = self._bar(total=total_jobs, desc="sweep", unit="job", position=0) if enabled else None
        self._job: Any = None
        self._job_name = ""

    def _bar(self, **kwargs: Any) -> Any:
        options = {"file": self.stream, "mininterval": self._interval, "dynamic_ncols": True, "leave": True}
        return tqdm(**{**options, **kwargs})  # a job's bar passes leave=False: the caller's value wins

    def start_job(self, name: str) -> None:
        self._job_name = name
        if not self.enabled:
            return
        self._close_job()
        self._job = self._bar(total=None, desc=f"job {name}", unit="req", position=1, leave=False)

    def job_progress(self, finished: int, total: int, elapsed_s: float, preemptions: int) -> None:
        if self._job is None:
            return
        if self._job.total != total:
            self._job.reset(total=total)
        self._job.n = finished
        self._job.set_postfix(preemptions=preemptions, refresh=False)
        self._job.refresh()

    def end_job(self, name: str, status: str, detail: str) -> None:
        self.jobs_done += 1
        if not self.enabled:
            return
        self._close_job()
        if self._sweep is not None:
            self._sweep.update(1)
        self.message(f"job {name}: {status} {detail}")

    def message(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text, file=self.stream)

    def close(self) -> None:
        self._close_job()
        if self._sweep is not None:
            self._sweep.close()
            self._sweep = None

    def _close_job(self) -> None:
        if self._job is not None:
            self._job.close()
            self._job = None


class RequestProgress:
    """One bar for an attached run: requests finished, with the server's running/waiting/KV/preemptions."""

    def __init__(self, total: int, name: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        interval = 0.5 if _is_tty(self.stream) else 5.0
        self._bar = (
            tqdm(total=total, desc=name, unit="req", file=self.stream, mininterval=interval, dynamic_ncols=True)
            if enabled
            else None
        )

    def update(self, finished: int, running: int, waiting: int, kv_usage: float, preemptions: int) -> None:
        if self._bar is None:
            return
        self._bar.n = finished
        self._bar.set_postfix(running=running, waiting=waiting, kv=f"{kv_usage:.0%}", preempted=preemptions)

    def message(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text, file=self.stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
