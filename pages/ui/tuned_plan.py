"""The Planner's "rank at each layout's best settings": every layout at its own knee (engine.planner.plan_tuned),
with the SLO and cliff-limit inputs; the link keeps the choice (``tune``, ``slo``, ``cliff``)."""

from __future__ import annotations

from dataclasses import replace

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from engine.knee import SLO, CliffLimit, parse_cliff, parse_slo
from engine.planner import TunedLayout, plan_tuned
from engine.scenario import Scenario
from pages.ui import links
from pages.ui.charts import base_layout, role_color

CLIFF_CHOICES = {"none": "none", "no-preemption": "no preemption", "5%": "preempting ≤ 5 % of the run"}


@st.cache_data(show_spinner="Searching each layout's knee…", max_entries=32)
def tuned(scenario: Scenario, slo: SLO, cliff: CliffLimit) -> list[TunedLayout]:
    return plan_tuned(scenario, slo=slo, cliff=cliff)


def _name(r: TunedLayout) -> str:
    return f"DP {r.dp} × TP {r.tp} × PP {r.pp}"


def _slo_text(ttft_s: float, tpot_ms: float, e2e_s: float) -> str:
    parts = [f"ttft_p99={ttft_s:g}s" if ttft_s > 0 else "", f"tpot={tpot_ms:g}ms" if tpot_ms > 0 else "",
             f"e2e_p99={e2e_s:g}s" if e2e_s > 0 else ""]  # fmt: skip
    return ",".join(p for p in parts if p)


def _slo_inputs() -> tuple[SLO, str]:
    """Three numbers (0 = no limit), seeded from the link's ``slo``; returns the SLO and its link text."""
    try:
        linked = parse_slo(links.page_param("slo"))
    except ValueError:
        linked = SLO()
    c = st.columns(4)
    ttft = c[0].number_input("SLO: p99 TTFT (s, 0 = none)", min_value=0.0, step=1.0,
                             key=links.seed_widget("slo_ttft", linked.ttft_p99_s or 0.0))  # fmt: skip
    tpot = c[1].number_input("SLO: mean TPOT (ms, 0 = none)", min_value=0.0, step=5.0,
                             key=links.seed_widget("slo_tpot", (linked.tpot_mean_s or 0.0) * 1000))  # fmt: skip
    e2e = c[2].number_input("SLO: p99 E2E (s, 0 = none)", min_value=0.0, step=10.0,
                            key=links.seed_widget("slo_e2e", linked.e2e_p99_s or 0.0))  # fmt: skip
    cliff_default = links.page_param("cliff") if links.page_param("cliff") in CLIFF_CHOICES else "none"
    cliff = c[3].selectbox("Cliff limit", list(CLIFF_CHOICES), format_func=CLIFF_CHOICES.__getitem__,
                           key=links.seed_widget("cliff", cliff_default))  # fmt: skip
    links.set_page_param("cliff", None if cliff == "none" else cliff)
    text = _slo_text(float(ttft), float(tpot), float(e2e))
    links.set_page_param("slo", text or None)
    return parse_slo(text), cliff


def wants_tuned() -> bool:
    """The toggle, seeded from the link's ``tune``."""
    on = st.toggle("Rank at each layout's best settings (its own knee)",
                   key=links.seed_widget("tune", links.page_param("tune") == "1"),
                   help="Each layout's max_num_seqs searched by the engine (engine.knee).")  # fmt: skip
    links.set_page_param("tune", "1" if on else None)
    return bool(on)


def tuned_section(sc: Scenario) -> None:
    """Every layout at its own knee: best first, with what bound each, and the gain over the user's setting."""
    slo, cliff_key = _slo_inputs()
    results = tuned(replace(sc, dp=1, tp=1, pp=1), slo, parse_cliff(cliff_key))
    feasible = [r for r in results if r.feasible and r.knee]
    rest = [r for r in results if not (r.feasible and r.knee)]
    predictions = sum(r.knee.predictions for r in results if r.knee)
    cal = next((r.knee.calibration for r in results if r.knee), "defaults")
    if feasible:
        best = feasible[0]
        k = best.knee
        assert k is not None
        st.success(f"**Best predicted layout at its own knee: {_name(best)} with max_num_seqs "
                   f"{k.recommended.max_num_seqs:,}** — {_fmt(k.best.completion_s)} (yours, {sc.max_num_seqs:,}: "
                   f"{_fmt(k.current.completion_s)}). {k.why}", icon=":material/emoji_events:")  # fmt: skip
        _chart(feasible, sc.max_num_seqs)
    st.subheader(f"Layouts at their own knee ({len(feasible)} meet the limits)")
    origin = links.app_origin()
    rows = []
    for rank, r in enumerate(feasible, start=1):
        k = r.knee
        assert k is not None
        rows.append({
            "rank": rank, "layout": _name(r), "recommended max_num_seqs": k.recommended.max_num_seqs,
            "completion there (s)": k.best.completion_s, f"yours, {sc.max_num_seqs:,} (s)": k.current.completion_s,
            "gain": k.gain, "preemptions there": k.best.preemptions, "TTFT p99 (s)": k.best.ttft_p99_s,
            "TPOT mean (ms)": (k.best.tpot_mean_s or 0.0) * 1000, "bound": k.bound.value, "why": k.why,
            "explore": origin + links.explore_link({"dp": r.dp, "tp": r.tp, "pp": r.pp,
                                                    "max_num_seqs": k.recommended.max_num_seqs}, base=sc),
        })  # fmt: skip
    if rows:
        st.dataframe(
            pl.DataFrame(rows), hide_index=True, width="stretch", key="planner_tuned",
            column_config={
                "completion there (s)": st.column_config.NumberColumn(format="%.1f"),
                f"yours, {sc.max_num_seqs:,} (s)": st.column_config.NumberColumn(format="%.1f"),
                "gain": st.column_config.NumberColumn(format="percent"),
                "TTFT p99 (s)": st.column_config.NumberColumn(format="%.1f"),
                "TPOT mean (ms)": st.column_config.NumberColumn(format="%.1f"),
                "why": st.column_config.TextColumn(width="large"),
                "explore": st.column_config.LinkColumn("open", display_text="Open at the knee in Explore"),
            },
        )  # fmt: skip
    st.caption(
        f"All figures predicted by the engine (calibration: {cal}) for this scenario's request list: each layout's "
        f"knee is the smallest max_num_seqs within 1 % of its best completion time that meets the limits (cliff: "
        f"{parse_cliff(cliff_key).describe()}; SLO: {slo.describe()}). {predictions} predictions."
    )
    if rest:
        st.subheader(f"Layouts without a recommendation ({len(rest)})")
        st.dataframe(pl.DataFrame([{"layout": _name(r), "why (predicted)": r.reason} for r in rest]),
                     hide_index=True, width="stretch", key="planner_tuned_rest")  # fmt: skip


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f} s"


def _chart(feasible: list[TunedLayout], yours: int) -> None:
    names = [_name(r) for r in feasible]
    fig = go.Figure()
    fig.add_bar(x=[r.knee.best.completion_s for r in feasible if r.knee], y=names, orientation="h",
                name="predicted at the layout's knee", marker_color=role_color("predicted"))  # fmt: skip
    fig.add_bar(x=[r.knee.current.completion_s for r in feasible if r.knee], y=names, orientation="h",
                name=f"predicted at your max_num_seqs ({yours:,})",
                marker_color=role_color("predicted", 2))  # fmt: skip
    base_layout(fig, title="Predicted completion time per layout: at its knee and at your setting (engine)",
                x_title="completion time (s)", y_title="layout", height=max(240, 56 * len(feasible) + 110))  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    st.plotly_chart(fig, width="stretch", key="planner_tuned_chart", config={"displaylogo": False})
