"""Fits' predictions side by side in worker processes (``python -m engine validate --published --jobs N``).

A fit costs its evaluations: every trial calibration predicts every run it trains on, and a served bench record takes
0.3–1.8 s to predict. The runs of one trial are independent, so ``figures_of`` predicts them in parallel while
``figure_workers`` is open, and in order, here, otherwise.

The workers are spawned, not forked: the predictions use polars, whose thread pool does not survive a fork (a forked
child waits forever on its first parallel operation). Each worker builds its own evaluators once, from the same
picklable recipe as the parent, so a task carries a run id and a calibration and returns that run's figures. A
prediction is a pure function of (run, calibration), so a report is the same for any number of jobs
(tests/unit/test_fidelity_workers.py); only its wall time changes.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from engine.perf import Calibration

Figures = dict[str, float | None]
Recipe = Callable[[], Mapping[str, Any]]  # picklable: builds {run id: evaluator} (in the parent and in each worker)


@dataclass
class _Open:
    pool: ProcessPoolExecutor
    run_id_of: dict[int, str]  # id(parent's evaluator) → its run id; the workers hold their own copies by run id


_open: _Open | None = None
_worker_evaluators: dict[str, Any] = {}  # in a worker process: its own evaluators, by run id


def _start_worker(recipe: Recipe, compiled_loop: bool) -> None:
    if compiled_loop:  # the same window loop as the parent (the two are held to each other, but keep one path)
        from engine import window_jit

        window_jit.load()
    _worker_evaluators.update(recipe())


def _worker_figures(run_id: str, calibration: Calibration) -> Figures:
    return _worker_evaluators[run_id].figures(calibration)


@contextmanager
def figure_workers(recipe: Recipe, evaluators: Mapping[str, Any], jobs: int) -> Iterator[None]:
    """Within the block, ``figures_of`` sends the runs of ``evaluators`` (the parent's, built by ``recipe``) to
    ``jobs`` worker processes. ``jobs`` ≤ 1, or workers already open: nothing changes."""
    global _open
    if jobs <= 1 or _open is not None or not evaluators:
        yield
        return
    from engine import window_jit

    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(recipe, window_jit.kernel() is not None),
    )
    _open = _Open(pool, {id(ev): run_id for run_id, ev in evaluators.items()})
    try:
        yield
    finally:
        _open = None
        pool.shutdown(cancel_futures=True)


def figures_of(evaluators: Sequence[Any], calibration: Calibration) -> list[Figures]:
    """Each evaluator's figures for one calibration, in order: what an evaluator remembers (``recall``) comes from it,
    the rest from the workers when they are open (then ``remember``-ed), else from ``figures`` here."""
    out: list[Figures | None] = [None] * len(evaluators)
    pending: list[tuple[int, Future[Figures]]] = []
    local: list[int] = []
    for i, ev in enumerate(evaluators):
        recall = getattr(ev, "recall", None)
        out[i] = recall(calibration) if recall is not None else None
        if out[i] is not None:
            continue
        run_id = _open.run_id_of.get(id(ev)) if _open is not None else None
        if run_id is None:
            local.append(i)
        else:
            pending.append((i, _open.pool.submit(_worker_figures, run_id, calibration)))  # type: ignore[union-attr]
    for i in local:  # while the workers run
        out[i] = evaluators[i].figures(calibration)
    for i, future in pending:
        figures = future.result()
        remember = getattr(evaluators[i], "remember", None)
        if remember is not None:
            remember(calibration, figures)
        out[i] = figures
    return out  # type: ignore[return-value]
