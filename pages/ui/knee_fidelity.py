"""The Fidelity page's knee section: per sweep family, the predicted knee (held-out predictions of every run)
against the measured one, in grid steps; and the engine's own knee search on max_num_seqs families."""

from __future__ import annotations

from typing import Any

import polars as pl
import streamlit as st

from engine.fidelity.runs import load_cases
from engine.knee_fidelity import FamilyKnee, family_knees, knee_error_stats, searched_knees
from engine.store import Store
from pages.ui import data


@st.cache_data(show_spinner="Searching the engine's knee on each max_num_seqs family…", max_entries=4)
def _searched(_store: Store, knees: tuple[FamilyKnee, ...]) -> list[dict[str, object]]:
    ids = sorted({r for k in knees if k.axis == "max_num_seqs" for r in k.run_ids})
    cases = {c.run_id: c for c in load_cases(_store, ids)[0]} if ids else {}
    return [s.as_dict() for s in searched_knees(knees, cases)]


def knee_section(store: Store, rows: list[dict[str, Any]]) -> None:
    st.subheader("The knee: predicted vs measured, per sweep family")
    metas = {r["run_id"]: data.run_meta(store, r["run_id"]) or {} for r in rows}
    knees, skipped = family_knees(rows, metas)
    if not knees:
        st.caption("No sweep family with three or more settings of one of max_num_seqs, the KV pool or the batch.")
        return
    stats = knee_error_stats(knees)
    st.markdown(
        f"Over **{stats['knees']}** family knees: **{stats['exact']}** on the measured setting, "
        f"**{stats['within_one_step']}** within one grid step; grid steps off — median **{stats['median_steps']}**, "
        f"mean **{stats['mean_steps']:.2f}**, worst **{stats['worst_steps']}**."
        if stats["knees"] else "No family has a knee on both sides."
    )  # fmt: skip
    st.dataframe(
        pl.DataFrame([{
            "family": k.family, "swept": k.axis, "settings (more KV pressure →)": ", ".join(map(str, k.settings)),
            "knee": "highest throughput" if k.definition == "throughput" else "last without preemption",
            "measured": k.measured, "predicted": k.predicted, "grid steps off": k.steps_off,
        } for k in knees]),
        hide_index=True, width="stretch", key="fid_knees",
    )  # fmt: skip
    st.caption(
        "Predicted: the validation report's figures above (every run predicted with a calibration fitted without "
        "it); measured: the runs' own. Empty: every setting preempts on that side. "
        + " ".join(f"Left out: {s}." for s in skipped)
    )
    searched = _searched(store, tuple(knees))
    if searched:
        st.dataframe(
            pl.DataFrame([{
                "family": s["family"], "knee": s["definition"], "engine's search (max_num_seqs)": s["searched"],
                "measured grid cell": s["measured_setting_below"], "measured knee": s["measured"],
                "grid steps off": s["steps_off"], "predictions": s["predictions"], "calibration": s["calibration"],
            } for s in searched]),
            hide_index=True, width="stretch", key="fid_knee_search",
        )  # fmt: skip
        st.caption(
            "The engine's knee search (engine.knee, the one behind Explore's recommendation and `plan --tune`) on "
            "the family's scenario and request list, with the host's uncalibrated prior: no fit has seen these "
            "runs. 'Measured grid cell' is the family's largest setting at or below the search's answer."
        )
