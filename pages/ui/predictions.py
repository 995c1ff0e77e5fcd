"""Predictions, cached per scenario (and per request list for a measured run's own prediction)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import streamlit as st

from engine.scenario import Scenario
from engine.simulate import Prediction, SimulationError, predict

__all__ = ["Prediction", "SimulationError", "predicted", "predicted_for_requests"]


@st.cache_data(show_spinner="Predicting…", max_entries=256)
def predicted(scenario: Scenario) -> Prediction:
    """The engine's prediction for a scenario (the workload drawn from its profile and seed)."""
    return predict(scenario)


@st.cache_data(show_spinner="Predicting this run…", max_entries=64)
def predicted_for_requests(scenario: Scenario, lengths_key: str, _lengths: np.ndarray) -> Prediction:
    """The prediction of a measured run: its scenario with its actual request list (keyed by the list's digest)."""
    return predict(replace(scenario, num_requests=len(_lengths)), requests=_lengths)


def lengths_digest(lengths: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(lengths, dtype=np.int64).tobytes()).hexdigest()[:16]
