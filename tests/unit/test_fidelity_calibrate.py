"""The fitter's parts: the box-constrained Nelder-Mead, the fold split, the residuals the loss is made of."""

from __future__ import annotations

import math

import numpy as np

from engine.fidelity.calibrate import ONE_SIDED_CLIFF_PENALTY, folds_of, log_residuals, nelder_mead
from engine.fidelity.report import rel_err


def test_nelder_mead_finds_the_minimum_of_a_curved_valley() -> None:
    def rosenbrock(x: np.ndarray) -> float:
        return float((1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2)

    x, value, evals = nelder_mead(
        rosenbrock, np.array([-1.2, 1.0]), np.array([-5.0, -5.0]), np.array([5.0, 5.0]), max_evals=2000
    )
    assert np.allclose(x, [1.0, 1.0], atol=1e-2) and value < 1e-4 and evals <= 2000


def test_nelder_mead_stays_inside_its_box() -> None:
    x, _, _ = nelder_mead(lambda x: float(np.sum((x - 10) ** 2)), np.zeros(3), -np.ones(3), np.ones(3))
    assert np.allclose(x, 1.0, atol=1e-3)


def test_folds_are_deterministic_disjoint_and_complete() -> None:
    ids = [f"r{i}" for i in range(7)]
    folds = folds_of(list(reversed(ids)), 3)
    assert folds == [["r0", "r3", "r6"], ["r1", "r4"], ["r2", "r5"]]
    # Strata first: the two runs alike (same stratum) are dealt into different folds.
    assert folds_of(["a", "b", "c", "d"], 2, {"a": (1,), "b": (1,), "c": (9,), "d": (9,)}) == [["a", "c"], ["b", "d"]]
    assert folds_of(ids[:2], 5) == [["r0"], ["r1"]]  # leave-one-out when runs are few


def test_log_residuals_and_one_sided_cliffs() -> None:
    pred = {"completion_s": 12.0, "ttft_mean_s": 1.0, "tpot_mean_s": None, "e2e_mean_s": 5.0, "cliff_onset_s": 2.0}
    meas = {"completion_s": 10.0, "ttft_mean_s": 2.0, "tpot_mean_s": 0.01, "e2e_mean_s": 5.0, "cliff_onset_s": None}
    res = log_residuals(pred, meas)
    assert math.isclose(res["completion_s"], math.log(1.2))
    assert math.isclose(res["ttft_mean_s"], math.log(0.5))
    assert "tpot_mean_s" not in res and res["e2e_mean_s"] == 0.0
    assert res["cliff_onset_s"] == ONE_SIDED_CLIFF_PENALTY


def test_relative_error() -> None:
    assert rel_err(12, 10) == 0.2 and rel_err(8, 10) == -0.2
    assert rel_err(None, 1) is None and rel_err(1, 0) is None
