"""Predictions, cached per scenario — and a measured run's own prediction, made as the engine's fidelity report
makes it (engine.fidelity.report.predict_case: the run's scenario, its own request list arriving as the scheduler saw
it, prefix caching as the run had it) with the calibration stored for its hardware."""

from __future__ import annotations

from typing import Any

import streamlit as st

from engine.fidelity import calibration_for
from engine.fidelity.report import predict_case
from engine.fidelity.runs import RunCase
from engine.perf import Calibration
from engine.scenario import Scenario
from engine.simulate import Prediction, SimulationError, predict
from engine.store import Store
from pages.ui import compare, data

__all__ = ["Prediction", "SimulationError", "predicted", "run_prediction"]


@st.cache_data(show_spinner="Predicting…", max_entries=256)
def predicted(scenario: Scenario) -> Prediction:
    """The engine's prediction for a scenario (the workload drawn from its profile and seed)."""
    return predict(scenario)


@st.cache_data(show_spinner="Predicting this run…", max_entries=64)
def _predicted_run(run_key: str, calibration_key: str, _case: RunCase, _calibration: Calibration) -> Prediction:
    return predict_case(_case, _calibration)


def run_prediction(store: Store, run_id: str) -> tuple[Prediction | None, str]:
    """(the run's own prediction, "") or (None, why it cannot be predicted)."""
    meta: dict[str, Any] | None = data.run_meta(store, run_id)
    if meta is None:
        return None, f"run {run_id} is not in the database"
    try:
        case = compare.run_case(store, run_id)
        calibration = calibration_for(store, meta)
        return _predicted_run(compare.run_key(meta), calibration.source, case, calibration), ""
    except ValueError as exc:  # RunError, CatalogError, ScenarioError, SimulationError: each says what is wrong
        return None, str(exc)
