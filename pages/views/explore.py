"""Explore (landing page): one scenario's predicted cliff, the memory behind it, the measured runs beside it, and a
map of where the cliff lies as two settings change."""

from __future__ import annotations

import math
from dataclasses import replace

import plotly.graph_objects as go
import streamlit as st

from engine.scenario import Scenario
from pages.ui import cliffmap, compare, controls, data, links, matching, measured_cliff, recommend
from pages.ui.charts import figure_from_spec, heatmap_figure, memory_figure
from pages.ui.errors import explain
from pages.ui.exports import file_stem, png_of, prediction_files
from pages.ui.predictions import Prediction, SimulationError, predicted, run_prediction
from pages.ui.timelines import Source, missing_panels, timelines_figure

TABS = ("Timelines", "Memory per GPU", "Cliff map")


def fmt_s(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if value >= 100:
        return f"{value:,.0f} s"
    if value >= 1:
        return f"{value:,.1f} s"
    return f"{value * 1000:,.0f} ms"


def fmt_tokens(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 1e6:
        return f"{value / 1e6:,.2f} M tok"
    if value >= 1e4:
        return f"{value / 1e3:,.0f} k tok"
    return f"{value:,.0f} tok"


def describe(sc: Scenario) -> str:
    device = f"custom {sc.gpu_mem_gib:g} GiB GPU" if sc.gpu_mem_gib else sc.gpu
    return (
        f"**{sc.model}** on **{sc.gpus}× {device}** (DP {sc.dp} × TP {sc.tp} × PP {sc.pp}), "
        f"**{sc.num_requests:,}** requests of workload `{sc.workload}` (seed {sc.seed}), "
        f"max_num_seqs {sc.max_num_seqs:,}, max_num_batched_tokens {sc.max_num_batched_tokens:,}"
        + (", async scheduling" if sc.async_scheduling else "")
        + ("" if sc.peer_to_peer else ", no GPU peer-to-peer")
    )


def summary_metrics(pred: Prediction) -> None:
    s = pred.summary
    onset = s.get("cliff_onset_s")
    row1 = st.columns(4)
    row1[0].metric("Completion time (predicted)", fmt_s(s.get("completion_s")))
    row1[1].metric(
        "Cliff onset (predicted)", fmt_s(onset) if onset is not None else "no cliff",
        help="Time of the first preemption: the KV cache is full and vLLM starts evicting and recomputing.",
    )  # fmt: skip
    row1[2].metric("Preemptions (predicted)", f"{int(s.get('preemptions') or 0):,}")
    row1[3].metric(
        "Peak running (predicted)", f"{int(s.get('peak_running') or 0):,}",
        help="Peak number of requests decoding at once (all replicas).",
    )  # fmt: skip
    row2 = st.columns(4)
    row2[0].metric(
        "KV capacity (predicted)",
        fmt_tokens(s.get("kv_capacity_tokens")),
        help="Tokens of KV cache per replica, as vLLM would report at start-up.",
    )
    row2[1].metric("TTFT mean (predicted)", fmt_s(s.get("ttft_mean_s")))
    row2[2].metric("TPOT mean (predicted)", fmt_s(s.get("tpot_mean_s")))
    row2[3].metric("E2E p99 (predicted)", fmt_s(s.get("e2e_p99_s")))
    regime = s.get("bound_regime")
    if regime:
        st.caption(f"Predicted regime: **{regime}** · calibration: {s.get('calibration', 'catalog figures')}")


def same_model_runs(sc: Scenario) -> tuple[list[matching.RunMatch], int]:
    """Stored runs of this scenario's model and device, nearest first; and how many runs are stored in all."""
    store = data.get_store()
    runs = data.runs_table(store).to_dicts()
    return matching.rank_runs(runs, sc, lambda run_id: data.run_meta(store, run_id)), len(runs)


def measured_overlay(ranked: list[matching.RunMatch], stored: int) -> tuple[str | None, str]:
    """Pick the measured run to overlay: the URL's choice, else the nearest run of this model and device; returns
    (run_id, why). Without such a run there is nothing to pick (the measured-cliff panel shows the nearest run)."""
    if not ranked:
        return None, ""
    options = ["none", *[m.run_id for m in ranked]]
    labels = {"none": "none", **{m.run_id: m.describe() for m in ranked}}
    wanted = links.page_param("compare")
    if wanted not in options:  # the closest run of this model and device; its label says if it is not exact
        wanted = ranked[0].run_id
    key = links.seed_widget("compare", wanted)
    if st.session_state.get(key) not in options:
        links.reseed_widget("compare", wanted)
    choice = st.selectbox(
        f"Overlay a measured run ({len(ranked)} of {stored} stored runs share this model and device)",
        options, format_func=labels.__getitem__, key=key,
    )  # fmt: skip
    links.set_page_param("compare", None if choice == "none" else choice)
    return (None if choice == "none" else choice), labels.get(choice, "")


def measured_cliff_panel(sc: Scenario) -> None:
    """The nearest stored run with a measured cliff, beside the engine's prediction of that run — shown when no run
    of this scenario's model and device is stored, labelled with its own model, device and host."""
    store = data.get_store()
    found = measured_cliff.nearest_measured_cliff(store, sc)
    with st.container(border=True, key="measured_cliff"):
        if found is None:
            st.markdown("**:material/straighten: Measured on a real vLLM engine**")
            st.caption(
                f"No stored run used {sc.model} on {sc.gpu}, and none of the stored runs has a measured preemption "
                "yet. Collect one (`python -m collectors run PRESET`) or add one on the Upload page."
            )
            return
        meta, measured = found.meta, found.summary
        with st.spinner(measured_cliff.EVIDENCE_SPINNER):
            shown = measured_cliff.evidence(store, compare.run_key(meta), found.run_id)
        st.markdown(
            f"**:material/straighten: Measured on a real vLLM engine — run `{found.name}`: {meta.get('model_name')} "
            f"on {int(meta.get('num_devices') or 1)}× {meta.get('device')}, not the scenario above**"
        )
        line = (
            f"**Measured**: cliff {fmt_s(measured.get('cliff_onset_s'))} · "
            f"{int(measured.get('preemptions') or 0):,} preemptions · done in {fmt_s(measured.get('completion_s'))}"
        )
        if shown.predicted is not None:
            p = shown.predicted
            line += (
                f" — **predicted** for this run (its own requests): cliff {fmt_s(p.get('cliff_onset_s'))} · "
                f"{int(p.get('preemptions') or 0):,} preemptions · done in {fmt_s(p.get('completion_s'))}"
            )
        else:
            line += f" — no prediction of this run: {shown.why_not}"
        st.markdown(line)
        if shown.figure is not None:
            st.plotly_chart(figure_from_spec(shown.figure), width="stretch", key="measured_cliff_timelines",
                            config={"displaylogo": False})  # fmt: skip
        st.caption(
            f"Run {found.name}: {measured_cliff.run_settings(meta)}; "
            f"measured on {measured_cliff.where_measured(meta)}. "
            f"No stored run used {sc.model} on {sc.gpu}: this is the stored run with a measured cliff nearest to that "
            f"scenario (it differs in {len(found.differences)} settings). It is not a measurement of the scenario "
            "above; it shows the same mechanism — the KV cache fills, vLLM preempts and recomputes — on its own model "
            "and hardware." + (f" {shown.calibration_note}" if shown.calibration_note else "")
        )
        run_sc, _ = matching.scenario_from_run(meta)
        c1, c2 = st.columns(2)
        if run_sc is not None:
            params = {**links.scenario_params(run_sc), "compare": found.run_id}
            c1.page_link(links.PAGE_FILES["explore"], label="Open this run's scenario in Explore",
                         icon=":material/show_chart:", query_params=params)  # fmt: skip
        c2.page_link(links.PAGE_FILES["runs"], label="Compare it with the other measured runs",
                     icon=":material/table_chart:", query_params={"runs": found.run_id})  # fmt: skip


def measured_source(run_id: str, sc: Scenario, pred: Prediction) -> tuple[list[Source], str]:
    """The measured run's timeline, paired with a prediction of that run (its own request list) when the run's
    scenario is this one, else with the page's prediction; returns sources and a caption."""
    store = data.get_store()
    meta = data.run_meta(store, run_id) or {}
    frame = data.measured_timeline(store, run_id)
    summary = data.run_summary(store, run_id) or {}
    run_label = f"run {meta.get('name') or run_id}"
    measured = Source("measured", run_label, frame, summary.get("cliff_onset_s"))
    return [measured], f"Measured: {run_label} ({meta.get('device')}, {meta.get('created_at')})."


def prediction_downloads(sc: Scenario, pred: Prediction, fig: go.Figure | None) -> None:
    """Downloads of this scenario's prediction (tables, summary with the link's parameters, the timelines as PNG).
    Drawn only when opened, so a first visit renders nothing more than the expander."""
    with st.expander(":material/download: Download this prediction", key="explore_downloads", on_change="rerun") as box:
        if not box.open:
            return
        stem = file_stem("cliffscope-predicted", sc.model, f"{sc.gpus}x{sc.gpu}", f"dp{sc.dp}tp{sc.tp}pp{sc.pp}")
        files = prediction_files(pred, links.scenario_params(sc), stem)
        cols = st.columns(3)
        for i, f in enumerate(files):
            cols[i // 2].download_button(f.label, f.data, f.name, f.mime, key=f"dl_pred_{i}", on_click="ignore")
        if fig is not None:
            cols[2].download_button("Timelines chart (PNG)", png_of(fig), f"{stem}-timelines.png", "image/png",
                                    key="dl_pred_png", on_click="ignore")  # fmt: skip
        st.caption("Every file is the engine's prediction for the scenario above (its link parameters are in the "
                   "summary), not a measurement; measured runs download from the Runs page.")  # fmt: skip


def timelines_title(sources: list[Source]) -> str:
    """What the timelines figure shows: the prediction, and the measured run overlaid if any."""
    measured = [s.label for s in sources if s.role == "measured"]
    title = f"Timelines predicted by the {sources[0].label}"
    return f"{title}, measured {', '.join(measured)} overlaid" if measured else title


# ------------------------------------------------------------------------------------------------------ the page

sc = controls.scenario_controls()
st.title("Explore the reasoning cliff")
st.markdown(describe(sc))

try:
    pred: Prediction | None = predicted(sc)
    failure = ""
except SimulationError as exc:
    pred, failure = None, explain(exc)
except Exception as exc:  # a prediction bug must not take the page down
    pred, failure = None, f"the engine could not predict this scenario ({explain(exc)})"

if pred is None:
    st.warning(f"**No prediction for this scenario:** {failure}", icon=":material/warning:")
else:
    summary_metrics(pred)
# "Recommended for this layout": filled at the end of the page (a knee search is several predictions).
knee_slot = st.container()
ranked, stored = same_model_runs(sc)
# Filled after the timelines below: its slot is on screen first, but the predicted charts reach the browser first.
measured_slot = st.container()

tab_default = links.page_param("tab")
tabs = st.tabs(list(TABS), key="explore_tab", on_change="rerun", default=tab_default if tab_default in TABS else None)
active = next((name for name, tab in zip(TABS, tabs, strict=True) if tab.open), TABS[0])
links.set_page_param("tab", None if active == TABS[0] else active)

with tabs[0]:
    if tabs[0].open and pred is not None:
        compare_id, _ = measured_overlay(ranked, stored)
        sources = [Source("predicted", "engine, this scenario", pred.timeline, pred.summary.get("cliff_onset_s"))]
        if compare_id:
            try:
                measured, caption = measured_source(compare_id, sc, pred)
                run_meta = data.run_meta(data.get_store(), compare_id) or {}
                if not matching.differences(run_meta, sc):  # the run is this scenario: predict it as it ran
                    own, _ = run_prediction(data.get_store(), compare_id)
                    if own is not None:
                        sources[0] = Source(
                            "predicted", f"engine, run {run_meta.get('name') or compare_id}'s own requests",
                            own.timeline, own.summary.get("cliff_onset_s"),
                        )  # fmt: skip
                        errors = compare.overlay_errors(data.get_store(), compare_id, own)
                        measured = [replace(measured[0], errors=errors)]
                        caption += " " + compare.calibration_note("this run", own)
                sources += measured
                scored = measured[0].errors is not None
                st.caption(caption + " " + (compare.ERRORS_EXPLAINED if scored else compare.NOT_SCORED))
            except Exception as exc:
                st.warning(f"Could not overlay run {compare_id}: {explain(exc)}")
        fig = timelines_figure(sources, title=timelines_title(sources))
        if fig is not None:
            st.plotly_chart(fig, width="stretch", key="explore_timelines", config={"displaylogo": False})
        missing = missing_panels(sources)
        if missing:
            st.caption(f"Not drawn, no source has the series: {', '.join(missing)}.")
        prediction_downloads(sc, pred, fig)

with tabs[1]:
    if tabs[1].open:
        try:
            plan = data.memory_plan(sc)
            bars = data.memory_per_gpu(plan, sc)
            device = data.resolve_device(sc.gpu, sc.gpu_mem_gib)
            fig = memory_figure(
                bars, title=f"Memory per GPU (predicted) — {device.name}", capacity_gib=device.memory_gib
            )
            st.plotly_chart(fig, width="stretch", key="explore_memory", config={"displaylogo": False})
            st.markdown(
                f"KV cache: **{plan.kv_bytes_per_token / 1024:,.0f} KiB per token** for the whole model "
                f"({plan.kv_bytes_per_token_per_device / 1024:,.0f} KiB on each device), "
                f"**{plan.kv_capacity_tokens:,} tokens** per replica in {plan.kv_blocks:,} blocks of {sc.block_size}; "
                f"up to **{plan.max_concurrency:,.1f}** requests of max_model_len {plan.max_model_len:,} at once."
            )
            if not plan.feasible:
                st.error(f"This layout does not fit: {plan.reason}")
            for note in plan.notes:
                st.caption(note)
        except Exception as exc:
            st.error(f"Could not size memory for this scenario: {explain(exc)}")

with tabs[2]:
    if tabs[2].open:
        axis_keys = cliffmap.axes_for(sc)
        y_fallback = "output_length" if "output_length" in axis_keys else "num_requests"
        x_default = links.page_param("map_x") if links.page_param("map_x") in axis_keys else "max_num_seqs"
        y_default = links.page_param("map_y") if links.page_param("map_y") in axis_keys else y_fallback
        m_default = (
            links.page_param("map_metric") if links.page_param("map_metric") in cliffmap.METRICS else "completion_s"
        )
        c1, c2, c3 = st.columns(3)
        x_widget = links.seed_widget("map_x", x_default)
        if st.session_state.get(x_widget) not in axis_keys:
            links.reseed_widget("map_x", axis_keys[0])
        x_key = c1.selectbox("x axis", axis_keys, key=x_widget)
        y_options = [k for k in axis_keys if k != x_key]
        y_widget = links.seed_widget("map_y", y_default if y_default in y_options else y_options[0])
        if st.session_state.get(y_widget) not in y_options:
            links.reseed_widget("map_y", y_options[0])
        y_key = c2.selectbox("y axis", y_options, key=y_widget)
        metric = c3.selectbox("colour", list(cliffmap.METRICS), format_func=cliffmap.METRICS.__getitem__,
                              key=links.seed_widget("map_metric", m_default))  # fmt: skip
        links.set_page_param("map_x", None if x_key == "max_num_seqs" else x_key)
        links.set_page_param("map_y", None if y_key == y_fallback else y_key)
        links.set_page_param("map_metric", None if metric == "completion_s" else metric)
        knee = recommend.cached_knee(sc) if "max_num_seqs" in (x_key, y_key) else None
        knee_seqs = knee.recommended.max_num_seqs if knee is not None and knee.feasible else None
        cm = cliffmap.cliff_map(sc, x_key, y_key, metric, knee_seqs)
        xa, ya = cliffmap.AXES[x_key], cliffmap.AXES[y_key]
        fig = heatmap_figure(
            cm.z, x_values=cm.x_values, y_values=cm.y_values, x_title=cliffmap.axis_title(x_key, sc),
            y_title=cliffmap.axis_title(y_key, sc),
            z_title=cliffmap.METRICS[metric], title=f"Cliff map — {cliffmap.METRICS[metric]}, engine for this scenario",
            current=(xa.current(sc), ya.current(sc)), boundary=cliffmap.boundary(cm),
        )  # fmt: skip
        if knee_seqs is not None:
            cliffmap.mark_knee(fig, knee_seqs, (xa.current(sc), ya.current(sc)), x_key == "max_num_seqs")
        st.plotly_chart(fig, width="stretch", key="explore_cliffmap", config={"displaylogo": False})
        st.caption(
            "Each cell is a full prediction with the other settings of this scenario. The line marks, for each "
            "x value, the first y value at which the batch is predicted to preempt (the cliff)."
            + (f" The star marks the recommended max_num_seqs for this layout ({knee_seqs:,}, predicted knee)."
               if knee_seqs is not None else "")
        )  # fmt: skip
        if cm.failures:
            with st.expander(f"{len(cm.failures)} cell(s) cannot run"):
                st.write("\n".join(f"- {f}" for f in cm.failures))

if not ranked:
    with measured_slot:
        try:
            measured_cliff_panel(sc)
        except Exception as exc:  # the measured panel must not take the prediction down
            st.warning(f"Could not show a measured run: {explain(exc)}")

if pred is not None:
    try:
        recommend.recommendation_panel(knee_slot, sc, pred.summary)
    except Exception as exc:  # the recommendation must not take the prediction down
        knee_slot.warning(f"Could not recommend a setting: {explain(exc)}")
