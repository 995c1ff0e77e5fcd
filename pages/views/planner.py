"""Planner: every DP×TP×PP layout of a GPU budget, ranked by predicted completion time, with the reason for each
rank; infeasible layouts say why; each layout opens in Explore."""

from __future__ import annotations

from dataclasses import replace

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from engine.planner import LayoutResult, plan
from engine.scenario import Scenario
from pages.ui import controls, links, tuned_plan
from pages.ui.charts import base_layout, role_color
from pages.ui.errors import explain, page_done


@st.cache_data(show_spinner="Predicting every layout…", max_entries=64)
def ranked(scenario: Scenario) -> list[LayoutResult]:
    return plan(scenario)


def layout_name(r: LayoutResult) -> str:
    return f"DP {r.dp} × TP {r.tp} × PP {r.pp}"


PAPER_GPUS = 8  # the paper's node: 8 GPUs split DP×TP×PP
_SUGGESTED = "_cs_planner_budget_suggested"


def suggest_paper_budget() -> bool:
    """The first time the Planner opens in a session on a 1-GPU scenario (one layout: nothing to plan), plan the
    paper's 8 GPUs instead. A link that names ``gpus`` is kept as it is. Returns whether the budget was raised."""
    if _SUGGESTED not in st.session_state:
        sc = links.scenario()
        raise_it = sc.gpus == 1 and "gpus" not in links.current_url_params()
        st.session_state[_SUGGESTED] = raise_it
        if raise_it:
            links.set_scenario(replace(sc, gpus=PAPER_GPUS, dp=PAPER_GPUS, tp=1, pp=1))
            links.reseed_widget("gpus", PAPER_GPUS)
    return bool(st.session_state[_SUGGESTED])


suggested = suggest_paper_budget()
sc = controls.scenario_controls(show_layout=False)
st.title("Plan a layout")
st.markdown(
    f"Every way to split **{sc.gpus}× {sc.gpu}** for **{sc.model}**, serving {sc.num_requests:,} requests of "
    f"`{sc.workload}`: each layout predicted by the engine with the same request list and ranked by completion time "
    "(then throughput, then p99 E2E). Change the model, GPUs and workload in the sidebar."
)
if suggested and sc.gpus == PAPER_GPUS:
    st.info(f"Planning **{PAPER_GPUS} GPUs**, the paper's setting: one GPU has only one layout. Set **GPUs** in the "
            "sidebar to plan another budget; the link keeps your choice.", icon=":material/lightbulb:")  # fmt: skip
if tuned_plan.wants_tuned():
    try:
        tuned_plan.tuned_section(sc)
    except Exception as exc:
        st.error(f"Could not rank the layouts at their own knee: {explain(exc)}")
    page_done()
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
if sc.gpus == 1:
    st.caption("One GPU has one layout: raise GPUs in the sidebar to compare DP, TP and PP splits.")
origin = links.app_origin()
ranking = pl.DataFrame(
    [
        {
            "rank": rank,
            "layout": layout_name(r),
            "completion (s)": r.completion_s,
            "generation (tok/s)": r.generation_tokens_per_s,
            "p99 E2E (s)": r.e2e_p99_s,
            "preemptions": r.preemptions or 0,
            "explore": origin + links.explore_link({"dp": r.dp, "tp": r.tp, "pp": r.pp}, base=sc),
            "why it ranks here": r.reason,
        }
        for rank, r in enumerate(feasible, start=1)
    ]
)
if feasible:
    st.dataframe(
        ranking, hide_index=True, width="stretch", key="planner_ranking",
        column_config={
            "completion (s)": st.column_config.NumberColumn(format="%.1f"),
            "generation (tok/s)": st.column_config.NumberColumn(format="%.0f"),
            "p99 E2E (s)": st.column_config.NumberColumn(format="%.1f"),
            "why it ranks here": st.column_config.TextColumn(width="large"),
            "explore": st.column_config.LinkColumn("open", display_text="Open in Explore"),
        },
    )  # fmt: skip
    st.caption("All figures predicted by the engine for this scenario's request list. 'Open in Explore' opens the "
               "layout with every other setting of this scenario.")  # fmt: skip
    st.markdown("**Why each layout ranks where it does (predicted):**\n" + "\n".join(
        f"{rank}. **{layout_name(r)}** — {r.reason}" for rank, r in enumerate(feasible[:12], start=1)))  # fmt: skip
    best_link = links.scenario_params(replace(sc, dp=feasible[0].dp, tp=feasible[0].tp, pp=feasible[0].pp))
    st.page_link(links.PAGE_FILES["explore"], label=f"Open the best layout ({layout_name(feasible[0])}) in Explore",
                 icon=":material/show_chart:", query_params=best_link)  # fmt: skip

if infeasible:
    st.subheader(f"Infeasible layouts ({len(infeasible)})")
    st.dataframe(
        pl.DataFrame([{"layout": layout_name(r), "why it cannot run (predicted)": r.reason} for r in infeasible]),
        hide_index=True, width="stretch", key="planner_infeasible",
    )  # fmt: skip
