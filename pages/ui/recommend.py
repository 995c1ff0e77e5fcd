""" "Recommended for this layout": the knee (engine.knee) beside the current setting, with a one-click apply.

Explore's first load has a thin budget (~3 s, docs/dashboard.md) and a knee search is a handful of predictions
(~1 s of CPU before the compiled loop is loaded, ~0.2-0.5 s after), so the search runs only once the user asks for
it in a session; from then on it follows every scenario of that session (cached per scenario and limit). Its slot
sits beside the metrics but is filled at the end of the page, after the charts have been sent.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from engine.knee import NO_PREEMPTION, CliffLimit, Knee, Objective, find_knee
from engine.scenario import DEFAULT, Scenario
from pages.ui import links

AUTO = "_cs_knee_auto"  # session: the user asked for recommendations; keep computing them
LIMITS = {"none": "none (best completion time)", "no-preemption": "no preemption (stop short of the cliff)"}


def _base(sc: Scenario) -> Scenario:
    """The search does not depend on the user's own max_num_seqs: one cache entry serves every value of it."""
    return replace(sc, max_num_seqs=DEFAULT.max_num_seqs)


@st.cache_data(show_spinner=False, max_entries=64)
def knee_of(base: Scenario, limit: str) -> Knee:
    return find_knee(base, Objective.COMPLETION, cliff=NO_PREEMPTION if limit == "no-preemption" else CliffLimit())


def cached_knee(sc: Scenario) -> Knee | None:
    """The knee if this session asked for recommendations (for the cliff map's marker), else None."""
    if not st.session_state.get(AUTO):
        return None
    try:
        return knee_of(_base(sc), _limit())
    except Exception:  # the scenario cannot run: the page says so elsewhere
        return None


def _limit() -> str:
    value = st.session_state.get(links.widget_key("knee_limit"), "none")
    return value if value in LIMITS else "none"


def _apply(rec: Scenario) -> None:
    """Button callback (runs before the rerun draws the controls): the scenario and its widgets take the values."""
    links.set_scenario(rec)
    links.reseed_widget("max_num_seqs", rec.max_num_seqs)


def _ask() -> None:
    st.session_state[AUTO] = True


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f} s" if v >= 100 else (f"{v:,.1f} s" if v >= 1 else f"{v * 1000:,.0f} ms")


def recommendation_panel(slot: DeltaGenerator, sc: Scenario, current: dict | None) -> None:
    """Draw the panel into ``slot``: the button that starts the search, or the recommendation and its apply."""
    with slot.container(border=True, key="knee_panel"):
        st.markdown("**:material/tune: Recommended for this layout** (predicted)")
        if not st.session_state.get(AUTO):
            st.caption(
                "The engine can search max_num_seqs for this layout's knee — the smallest setting within 1 % of the "
                "best completion time, optionally without preemption — in a handful of predictions."
            )
            st.button("Find the recommended max_num_seqs", key="knee_find", on_click=_ask, icon=":material/search:")
            return
        limit = st.selectbox("Cliff limit", list(LIMITS), format_func=LIMITS.__getitem__,
                             key=links.seed_widget("knee_limit", "none"))  # fmt: skip
        with st.spinner("Searching max_num_seqs for this layout's knee…"):
            knee = knee_of(_base(sc), limit)
        if not knee.feasible:
            st.warning(f"No recommendation: {knee.why}", icon=":material/block:")
            return
        best, rec = knee.best, knee.recommended
        c = st.columns(3)
        here = rec.max_num_seqs == sc.max_num_seqs
        c[0].metric("Recommended max_num_seqs (predicted)", f"{rec.max_num_seqs:,}",
                    delta=None if here else f"{rec.max_num_seqs - sc.max_num_seqs:+,} from yours ({sc.max_num_seqs:,})",
                    delta_color="off")  # fmt: skip
        yours = (current or {}).get("completion_s")
        gain = _completion_change(yours, best.completion_s)
        c[1].metric("Completion there (predicted)", _fmt_s(best.completion_s), delta=None if here else gain,
                    delta_color="off", delta_arrow="off")  # fmt: skip
        c[2].metric("Preemptions there (predicted)", f"{best.preemptions or 0:,}")
        st.caption(
            f"Why: {knee.why} · bound: **{knee.bound.value}** · {knee.predictions} predictions in "
            f"{knee.seconds:.2f} s · predicted by the engine, calibration: {knee.calibration}"
        )
        if here:
            st.success("This scenario already uses the recommended setting.", icon=":material/check:")
        else:
            st.button(f"Apply max_num_seqs {rec.max_num_seqs:,}", key="knee_apply", on_click=_apply,
                      args=(replace(sc, max_num_seqs=rec.max_num_seqs),), type="primary",
                      icon=":material/done_all:")  # fmt: skip


def _completion_change(yours: float | None, there: float | None) -> str | None:
    """The recommended setting's completion time against the user's, in words that do not flip sign: a knee within
    the tolerance of the best may finish a little later than the user's own setting (it trades that for fewer
    preemptions), and "−0.1 % faster" read as a gain."""
    if not yours or not there:
        return None
    change = yours / there - 1
    if abs(change) < 0.0005:
        return "as fast as yours"
    return f"{abs(change):.1%} {'faster' if change > 0 else 'slower'} than yours"
