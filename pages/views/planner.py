"""Planner: every DP×TP×PP layout of a GPU budget, ranked by predicted completion time, with the reason for each
rank; infeasible layouts say why; each layout opens in Explore."""

from __future__ import annotations

from dataclasses import replace

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from engine.planner import LayoutResult, plan
from engine.scenario import Scenario
from pages.ui import controls, links
from pages.ui.charts import base_layout, role_color
from pages.ui.errors import explain, page_done


@st.cache_data(show_spinner="Predicting every layout…", max_entries=64)
def ranked(scenario: Scenario) -> list[LayoutResult]:
    return plan(scenario)


def layout_name(r: LayoutResult) -> str:
    return f"DP {r.dp} × TP {r.tp} × PP {r.pp}"


sc = controls.scenario_controls(show_layout=False)
st.title("Plan a layout")
st.markdown(
    f"Every way to split **{sc.gpus}× {sc.gpu}** for **{sc.model}**, serving {sc.num_requests:,} requests of "
    f"`{sc.workload}`: each layout predicted by the engine with the same request list and ranked by completion time "
    "(then throughput, then p99 E2E). Change the model, GPUs and workload in the sidebar."
)
try:
    results = ranked(replace(sc, dp=1, tp=1, pp=1))
except Exception as exc:
    st.error(f"Could not plan this budget: {explain(exc)}")
    page_done()

feasible = [r for r in results if r.feasible]
infeasible = [r for r in results if not r.feasible]
if feasible:
    best = feasible[0]
    st.success(f"**Best predicted layout: {layout_name(best)}** — {best.reason}", icon=":material/emoji_events:")
    fig = go.Figure(
        go.Bar(
            x=[r.completion_s for r in feasible], y=[layout_name(r) for r in feasible], orientation="h",
            marker_color=role_color("predicted"), name="predicted completion time",
            hovertemplate="%{y}: %{x:,.1f} s<extra>predicted</extra>",
        )
    )  # fmt: skip
    base_layout(fig, title="Predicted completion time per layout (engine)", x_title="completion time (s)",
                y_title="layout", height=max(220, 48 * len(feasible) + 90))  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    st.plotly_chart(fig, width="stretch", key="planner_chart", config={"displaylogo": False})

st.subheader(f"Ranked layouts ({len(feasible)} feasible)")
for rank, r in enumerate(feasible, start=1):
    c = st.columns([0.5, 2.2, 1.3, 1.5, 1.3, 1.2, 4, 1.6])
    c[0].markdown(f"**{rank}**")
    c[1].markdown(f"**{layout_name(r)}**")
    c[2].markdown(f"{r.completion_s:,.1f} s")
    c[3].markdown(f"{r.generation_tokens_per_s:,.0f} tok/s")
    c[4].markdown(f"p99 E2E {r.e2e_p99_s:,.1f} s" if r.e2e_p99_s is not None else "p99 E2E —")
    c[5].markdown(f"{r.preemptions or 0:,} preempt.")
    c[6].caption(r.reason)
    c[7].page_link(
        links.PAGE_FILES["explore"], label="Open in Explore", icon=":material/show_chart:",
        query_params=links.scenario_params(replace(sc, dp=r.dp, tp=r.tp, pp=r.pp)),
    )  # fmt: skip
if feasible:
    st.caption("All figures predicted by the engine. Columns: rank, layout, completion time, generation throughput, "
               "p99 end-to-end latency, preemptions, why it ranks where it does.")  # fmt: skip

if infeasible:
    st.subheader(f"Infeasible layouts ({len(infeasible)})")
    st.dataframe(
        pl.DataFrame([{"layout": layout_name(r), "why it cannot run (predicted)": r.reason} for r in infeasible]),
        hide_index=True, width="stretch", key="planner_infeasible",
    )  # fmt: skip
