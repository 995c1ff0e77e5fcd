"""A measured run beside its own prediction, with the per-series errors the fidelity report gives it.

The pages compute nothing here: the run is loaded, predicted and scored by engine.fidelity (``load_case``,
``predict_case``, ``run_series_errors``), so the Explore and Runs overlays print exactly the numbers of the report
and the Fidelity page, for the same calibration, worded by the engine's ``series_error_text``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from engine.fidelity.report import SERIES_ERROR_NAMES, run_series_errors, series_error_text
from engine.fidelity.runs import RunCase, load_case
from engine.simulate import Prediction
from engine.store import Store
from pages.ui import data

SeriesErrors = Mapping[str, Mapping[str, float | None]]

ERRORS_EXPLAINED = (
    "Errors as on the Fidelity page: mean |predicted − measured| over the whole run on one time grid, as a fraction "
    "of the KV pool (KV usage), of the measured peak (running requests) or of the measured mean rate (throughput), "
    "against the run's own prediction, on every engine sample. The Fidelity page predicts each run with a calibration "
    "fitted without it, here it is the one stored for its hardware, so a calibrated run's figures there can differ."
)
NOT_SCORED = (
    "No error is shown: this scenario differs from the run's, and errors are only meaningful against the run's own "
    "prediction (open the run's scenario, or see it on the Runs and Fidelity pages)."
)


def run_key(meta: Mapping[str, Any]) -> str:
    """A cache key that changes when the stored run does (its content hash and when it was ingested)."""
    provenance = meta.get("_store") or {}
    return f"{meta.get('run_id')}:{provenance.get('content_sha256')}:{provenance.get('ingested_at')}"


@st.cache_resource(show_spinner=False, max_entries=16)
def _load_case(case_key: str, run_id: str, _store: Store) -> RunCase:
    """Shared, not copied: a RunCase holds every engine sample of its run, and nothing mutates it."""
    return load_case(_store, run_id)


def run_case(store: Store, run_id: str) -> RunCase:
    """A stored run as the fidelity report reads it (engine.fidelity.runs.load_case); RunError says why not."""
    meta = data.run_meta(store, run_id)
    return load_case(store, run_id) if meta is None else _load_case(run_key(meta), run_id, store)


def overlay_errors(store: Store, run_id: str, prediction: Prediction) -> dict[str, dict[str, float | None]]:
    """The report's per-series errors of ``prediction`` against run ``run_id`` (engine.fidelity.report)."""
    return run_series_errors(run_case(store, run_id), prediction)


def calibration_note(label: str, prediction: Prediction) -> str:
    """Which calibration a run's own prediction used (the newest stored for its hardware, else the defaults)."""
    source = prediction.summary.calibration or "defaults"
    if source == "defaults":
        source = (
            "defaults — no calibration is stored for its hardware and vLLM version (fitting needs at least two runs "
            "of them: `python -m engine calibrate`)"
        )
    return f"Calibration of the prediction for {label}: {source}."


def error_note(errors: SeriesErrors | None, column: str) -> str | None:
    """A timeline column's error as the Fidelity page words it; None for a series the report does not score."""
    if not errors or column not in SERIES_ERROR_NAMES or column not in errors:
        return None
    return series_error_text(column, errors[column].get("err"))
