"""When the compiled decode-window loop (``engine.window_kernel``) is used, and how it gets compiled without anyone
waiting for it.

numba compiles the loop in 11-26 s the first time (into its on-disk cache, ``engine/__pycache__``), and loading it
from that cache still costs ~1 s (mostly importing numba). A prediction never waits for either: it takes the
compiled loop only once this process has it (``kernel()``), and the pure-Python loop, which gives the same run,
until then. A process that predicts often (the dashboard) calls ``start_background_load()`` after its first page:
the compile runs in a child process (so its seconds of work do not hold this process's interpreter lock), then the
thread loads the cached kernel. ``make run`` / ``make test`` compile it at install time (``python -m
engine.window_jit``), so the child finds the cache warm. Tests and benchmarks call ``load()`` and wait.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_kernel: Callable[..., Any] | None = None
_load_lock = threading.Lock()  # held while compiling or loading (seconds): only load() takes it
_start_lock = threading.Lock()
_thread: threading.Thread | None = None
load_error: str | None = None  # why the compiled loop is unavailable (numba missing or failing), for diagnostics


def kernel() -> Callable[..., Any] | None:
    """The compiled loop if this process has loaded it, else None (never blocks, never imports numba)."""
    return _kernel


def load() -> Callable[..., Any] | None:
    """Import numba and compile the loop (or load it from numba's cache), run it once; blocks. None if numba is
    unavailable or fails: predictions then keep the Python loop."""
    global _kernel, load_error
    with _load_lock:
        if _kernel is not None:
            return _kernel
        try:
            from engine.window_kernel import warm_up

            _kernel = warm_up()
            load_error = None
        except Exception as exc:  # numba missing or broken on this platform: the Python loop gives the same runs
            load_error = f"{type(exc).__name__}: {exc}"
            log.warning("compiled decode-window loop unavailable, using the Python loop: %s", load_error)
        return _kernel


def _compile_then_load(delay_s: float) -> None:
    global load_error
    time.sleep(delay_s)
    try:
        child = subprocess.run(
            [sys.executable, "-m", "engine.window_jit"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        load_error = f"background compile failed: {exc}"
        log.warning("%s; predictions keep the Python loop", load_error)
        return
    if child.returncode != 0:  # numba missing or failing: loading here would fail the same way, or compile in-process
        load_error = f"background compile exited {child.returncode}: {child.stderr.strip()[-300:]}"
        log.warning("%s; predictions keep the Python loop", load_error)
        return
    load()


def start_background_load(delay_s: float = 0.0) -> None:
    """Compile (in a child process) and load the loop in a daemon thread, after ``delay_s``; returns at once.
    Idempotent. The delay keeps numba's import (~0.7 s, mostly holding the interpreter lock) off a page being sent."""
    global _thread
    if _thread is not None or _kernel is not None:  # every dashboard rerun calls this: no lock on the way out
        return
    with _start_lock:
        if _thread is not None:
            return
        _thread = threading.Thread(
            target=_compile_then_load, args=(delay_s,), name="cliffscope-window-jit", daemon=True
        )
        _thread.start()


def main() -> int:
    """Compile the loop into numba's on-disk cache (install time, or the background child) and say how long."""
    t0 = time.perf_counter()
    k = load()
    if k is None:
        print(f"compiled decode-window loop unavailable: {load_error}", file=sys.stderr)
        return 1
    print(f"decode-window loop compiled or loaded from cache in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
