"""Two progress bars on stderr: the sweep (jobs done of all) and the running job (requests finished of the batch).

On a terminal the bars redraw in place; elsewhere (CI logs, files) one plain line is written every few seconds.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 24


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = 0 if total <= 0 else min(width, round(width * done / total))
    return "[" + "#" * filled + "." * (width - filled) + "]"


class SweepProgress:
    def __init__(self, total_jobs: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total_jobs = total_jobs
        self.jobs_done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_plain = 0.0
        self._job = ""
        self._drawn = False

    def start_job(self, name: str) -> None:
        self._job = name
        self._draw(f"job {name}: starting", force=True)

    def job_progress(self, finished: int, total: int, elapsed_s: float, preemptions: int) -> None:
        self._draw(
            f"job {self._job}: {bar(finished, total)} {finished}/{total} requests  {elapsed_s:6.1f} s  "
            f"preemptions {preemptions}"
        )

    def end_job(self, name: str, status: str, detail: str) -> None:
        self.jobs_done += 1
        self._draw(f"job {name}: {status} {detail}", force=True, final=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        self._clear()
        print(text, file=self.stream, flush=True)

    def _draw(self, job_line: str, force: bool = False, final: bool = False) -> None:
        if not self.enabled:
            return
        sweep_line = f"sweep {bar(self.jobs_done, self.total_jobs)} {self.jobs_done}/{self.total_jobs} jobs"
        if self.tty:
            self._clear()
            self.stream.write(f"{sweep_line}\n{job_line[:160]}")
            self.stream.flush()
            self._drawn = True
            if final:
                self.stream.write("\n")
                self._drawn = False
            return
        now = time.monotonic()
        if force or final or now - self._last_plain >= 5.0:
            self._last_plain = now
            print(f"{sweep_line} | {job_line}", file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[2K\x1b[1A\r\x1b[2K")
            self._drawn = False
