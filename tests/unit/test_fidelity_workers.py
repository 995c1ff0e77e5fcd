"""Published bench records scored in worker processes (engine.fidelity.workers) give the report a single process
gives, figure for figure: the workers only change where a prediction runs (real records, real engine, real spawned
processes)."""

from __future__ import annotations

import json
import sys
import types
from functools import partial

import pytest

from engine.fidelity import workers
from engine.fidelity.published_fit import bench_evaluators, bench_report, load_records
from engine.perf import Calibration


@pytest.fixture(autouse=True)
def plain_main(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spawned worker re-imports the parent's ``__main__`` first; once the dashboard tests have run, AppTest has
    left app.py there (the Makefile's note on the vLLM tier), so the workers here start from a bare one."""
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))


@pytest.fixture(scope="module")
def records() -> list:
    """AMD's two R1 runs on 8×MI300X and the one B200 record: each GPU has a single source and degree, so every
    record is scored by pooled fits on the others (small enough for the fast tier)."""
    return [r for r in load_records(kind="bench") if r.id.startswith("amd-") or r.gpu == "B200"]


def test_a_report_scored_by_two_workers_equals_one_scored_here(records: list) -> None:
    here = bench_report(records, max_evals=6, jobs=1)
    spawned = bench_report(records, max_evals=6, jobs=2)
    assert here["scored"] >= 3 and here["fold_fits"]
    assert json.dumps(spawned, sort_keys=True, default=str) == json.dumps(here, sort_keys=True, default=str)


def test_figures_come_from_the_workers_only_while_they_are_open(records: list) -> None:
    evaluators = bench_evaluators(records[:2])
    evs = list(evaluators.values())
    calibration = Calibration(per_seq_overhead_s=3e-5)
    with workers.figure_workers(lambda: {}, {}, jobs=2):  # nothing to hand out: no pool is started
        assert workers._open is None
    here = [ev.inner.figures(calibration) for ev in evs]
    with workers.figure_workers(partial(bench_evaluators, records[:2]), evaluators, jobs=2):
        assert workers._open is not None
        assert workers.figures_of(evs, calibration) == here
    assert workers._open is None
    assert all(ev.recall(calibration) == h for ev, h in zip(evs, here, strict=True))  # the parent remembers them
