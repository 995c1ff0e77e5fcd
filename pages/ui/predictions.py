"""Predictions, cached per scenario — and a measured run's own prediction, made as the engine's fidelity report
makes it: the run's scenario (engine.fidelity.runs.scenario_for_run), its own request list, the calibration stored
for its hardware, and prefix caching as the run had it."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import streamlit as st

from engine.fidelity import calibration_for
from engine.fidelity.runs import RunError, prefix_caching_of, scenario_for_run
from engine.perf import Calibration
from engine.scenario import Scenario
from engine.simulate import Prediction, SimulationError, predict
from engine.store import Store
from pages.ui import data

__all__ = ["Prediction", "SimulationError", "predicted", "run_prediction"]


@st.cache_data(show_spinner="Predicting…", max_entries=256)
def predicted(scenario: Scenario) -> Prediction:
    """The engine's prediction for a scenario (the workload drawn from its profile and seed)."""
    return predict(scenario)


@st.cache_data(show_spinner="Predicting this run…", max_entries=64)
def _predicted_run(
    scenario: Scenario, lengths_key: str, calibration_key: str, prefix_caching: bool, _lengths: np.ndarray,
    _calibration: Calibration,
) -> Prediction:  # fmt: skip
    return predict(scenario, requests=_lengths, calibration=_calibration, prefix_caching=prefix_caching)


def lengths_digest(lengths: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(lengths, dtype=np.int64).tobytes()).hexdigest()[:16]


def run_prediction(store: Store, run_id: str) -> tuple[Prediction | None, str]:
    """(the run's own prediction, "") or (None, why it cannot be predicted)."""
    meta: dict[str, Any] | None = data.run_meta(store, run_id)
    if meta is None:
        return None, f"run {run_id} is not in the database"
    lengths = data.run_request_lengths(store, run_id)
    if len(lengths) == 0:
        return None, "it has no requests to predict"
    try:
        scenario = scenario_for_run(meta, lengths)
        calibration = calibration_for(store, meta)
        return _predicted_run(
            scenario, lengths_digest(lengths), calibration.source, prefix_caching_of(meta), lengths, calibration
        ), ""
    except (RunError, SimulationError) as exc:
        return None, str(exc)
