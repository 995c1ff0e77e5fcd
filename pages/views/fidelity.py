"""Fidelity: how far the engine's predictions are from the measured runs — each run predicted with a calibration
fitted without it — per figure, per regime, with the worst runs one click from their overlay on the Runs page."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from engine.fidelity.calibrate import fit_groups
from engine.fidelity.report import SERIES, SERIES_ERROR_NAMES, TARGETS, run_score, validate
from engine.fidelity.runs import load_cases
from engine.store import Store
from pages.ui import access, data, links
from pages.ui.charts import base_layout
from pages.ui.errors import page_done
from pages.ui.knee_fidelity import knee_section
from pages.ui.published import show_published
from pages.ui.published_fidelity import render_published

FIGURE_LABELS = {
    "completion_s": "completion time (s)",
    "ttft_mean_s": "mean TTFT (s)",
    "tpot_mean_s": "mean TPOT (s/token)",
    "e2e_mean_s": "mean E2E latency (s)",
    "cliff_onset_s": "cliff onset: first preemption (s)",
    "kv_capacity_tokens": "KV capacity (tokens)",
    "queue_mean_s": "mean queue time (s)",
    "ttft_p99_s": "p99 TTFT (s)",
    "e2e_p99_s": "p99 E2E latency (s)",
    "peak_running": "peak running requests",
    "preemptions": "preemptions",
    "generation_tokens_per_s": "generation throughput (tokens/s)",
    "first_step_s": "first engine step (s)",
    "peak_kv_usage": "peak KV usage (fraction of the pool)",
}
LIMIT_OF = {"completion_s": 0.15, "cliff_onset_s": 0.15, "ttft_mean_s": 0.20, "tpot_mean_s": 0.20,
            "e2e_mean_s": 0.20, "kv_capacity_tokens": 0.03}  # fmt: skip
REGIME_COLORS = {"capacity-bound": "#d62728", "bandwidth-bound": "#1f77b4", "compute-bound": "#2ca02c",
                 "communication-bound": "#9467bd"}  # fmt: skip


@st.cache_data(show_spinner=False, max_entries=4)
def cached_report(_store: Store, runs_key: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The validation report for the database's runs as they are now (the key changes when a run changes)."""
    return validate(_store)


def mmw_frame(scope: str, table: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a median/mean/worst table (engine.fidelity.report.mmw_table) for one scope."""
    return [{"held out": scope, "figure": FIGURE_LABELS.get(name, name), "runs": t["n"], "median |err|": t["median"],
             "mean |err|": t["mean"], "worst err": t["worst"]} for name, t in table.items() if t["n"]]  # fmt: skip


def series_column(name: str) -> str:
    """A timeline error's column, named as the overlays name it (engine.fidelity.report.SERIES_ERROR_NAMES)."""
    series, of = SERIES_ERROR_NAMES[name]
    return f"{series} error ({of})"


def runs_link(run_ids: list[str]) -> str:
    return "/runs?" + urlencode({"runs": ",".join(run_ids)})


def pct(value: Any) -> str:
    return "—" if value is None else f"{value:+.1%}"


def scatter(rows: list[dict[str, Any]], figure: str) -> go.Figure:
    fig = go.Figure()
    points = [
        (r, r["figures"][figure])
        for r in rows
        if r["figures"][figure]["predicted"] is not None and r["figures"][figure]["measured"] is not None
    ]
    values = [v for _, f in points for v in (f["predicted"], f["measured"]) if v and v > 0]
    for regime in sorted({r["regime"] for r, _ in points}):
        mine = [(r, f) for r, f in points if r["regime"] == regime]
        fig.add_trace(go.Scatter(
            x=[f["measured"] for _, f in mine], y=[f["predicted"] for _, f in mine], mode="markers", name=regime,
            marker={"size": 10, "color": REGIME_COLORS.get(regime), "symbol": [
                "diamond" if r["over_saturated"] else "circle" for r, _ in mine]},
            text=[f"{r['name']}<br>error {pct(f['err'])}<br>calibration: {r['calibration']}" for r, f in mine],
            hovertemplate="measured %{x:.4g}<br>predicted %{y:.4g}<br>%{text}<extra></extra>",
        ))  # fmt: skip
    if values:
        lo, hi = min(values) / 1.5, max(values) * 1.5
        limit = LIMIT_OF.get(figure, 0.2)
        for factor, dash, name in (
            (1.0, "solid", "predicted = measured"),
            (1 + limit, "dot", f"±{limit:.0%}"),
            (1 - limit, "dot", None),
        ):
            fig.add_trace(go.Scatter(x=[lo, hi], y=[lo * factor, hi * factor], mode="lines", name=name,
                                     showlegend=name is not None, hoverinfo="skip",
                                     line={"color": "#888", "dash": dash, "width": 1}))  # fmt: skip
    label = FIGURE_LABELS.get(figure, figure)
    base_layout(
        fig,
        title=f"{label}: predicted vs measured",  # short: the chart is half the page wide; the axes say by whom
        x_title=f"measured {label}, vLLM run",
        y_title=f"predicted {label}",  # by the engine (the page says so); longer is clipped at this height
    )
    if values and min(values) > 0:
        ticks = log_ticks(min(values) / 1.5, max(values) * 1.5)
        for update in (fig.update_xaxes, fig.update_yaxes):
            update(type="log", tickvals=ticks, ticktext=[f"{v:g}" for v in ticks])
        # the log axis's tick labels sit lower than a linear axis's: keep the legend clear of the axis title
        fig.update_layout(legend={"y": -0.34})
    return fig


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks over [lo, hi], each labelled in full (Plotly's own log ticks label 20 and 0.5 as '2' and '5')."""
    return [
        m * 10.0**k
        for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for m in (1, 2, 5)
        if lo <= m * 10.0**k <= hi
    ]


def residual_box(rows: list[dict[str, Any]], figure: str) -> go.Figure:
    fig = go.Figure()
    for regime in sorted({r["regime"] for r in rows}):
        errs = [
            r["figures"][figure]["err"]
            for r in rows
            if r["regime"] == regime and r["figures"][figure]["err"] is not None
        ]
        names = [r["name"] for r in rows if r["regime"] == regime and r["figures"][figure]["err"] is not None]
        if errs:
            fig.add_trace(go.Box(y=[100 * e for e in errs], name=regime, boxpoints="all", text=names, pointpos=0,
                                 marker_color=REGIME_COLORS.get(regime)))  # fmt: skip
    fig.add_hline(y=0, line={"color": "#888", "width": 1})
    base_layout(
        fig,
        title=f"Residuals by regime: {FIGURE_LABELS.get(figure, figure)}",
        x_title="regime",
        y_title="(predicted − measured) / measured, %",
    )
    return fig


st.title("Fidelity: predicted vs measured")
st.caption(
    "Every measured run in the database is predicted by cliffscope's engine from its own parameters and request "
    "list, on its host's measured profile (CPU runs) or the datasheet (GPU runs), with a calibration fitted on the "
    "**other** runs of the same hardware and vLLM version (k-fold cross-validation). Errors are "
    "(predicted − measured) / measured. Methods: docs/fidelity.md."
)
store = data.get_store()
all_runs = data.runs_table(store)
if all_runs.height == 0:
    st.info("No measured runs yet: add some on the Upload page or with `python -m collectors`.",
            icon=":material/info:")  # fmt: skip
    render_published(store)
    page_done()
key = tuple(zip(all_runs["run_id"].to_list(), [str(v) for v in all_runs["ingested_at"].to_list()], strict=True))
with st.spinner(f"Cross-validating the engine on {len(key)} runs (fits and predictions)…"):
    report = cached_report(store, key)
rows: list[dict[str, Any]] = report["runs"]
summary = report["summary"]
if not rows:
    st.warning("No run in the database can be predicted: " + "; ".join(
        f"{s['run_id']}: {s['reason']}" for s in report["skipped"]))  # fmt: skip
    page_done()

# Headline: the targets over held-out runs
st.subheader(f"Summary over {summary['held_out_runs']} held-out runs")
# Three to a row: six bordered metrics in one row cut their values off at 1280 px ("95.…").
METRICS_PER_ROW = 3
cols = [col for _ in range(0, len(TARGETS), METRICS_PER_ROW) for col in st.columns(METRICS_PER_ROW)]
for col, (name, target) in zip(cols, summary["targets"].items(), strict=False):
    value = target["value"]
    state = {True: "met", False: "missed", None: "no data"}[target["met"]]
    col.metric(name.replace("_", " "), "—" if value is None else f"{value:.1%}",
               f"limit {target['limit']:.0%}: {state}", delta_color="off" if target["met"] is None
               else ("normal" if target["met"] else "inverse"), delta_arrow="off", border=True)  # fmt: skip
st.caption(
    f"{summary['calibrated_runs']} run(s) scored with a cross-validated calibration, {summary['uncalibrated_runs']} "
    f"uncalibrated (no other run of their hardware group to fit on); {summary['skipped_runs']} skipped; "
    f"{len(summary['over_saturated_runs'])} over-saturated (diamonds below); {summary['cliff_presence_mismatches']} "
    "where only one side had a cliff."
)
for miss in summary["misses"]:
    st.warning(miss, icon=":material/report:")
if summary.get("step_time_spread") is not None:
    adjusted = {
        k: summary.get(f"{k}_host_speed_adjusted")
        for k in ("completion_err_median", "ttft_mape", "tpot_mape", "e2e_mape")
    }
    st.caption(
        "Host noise (measured): the same decode step took a median "
        f"{summary['step_time_spread']:.0%} more or less time in one run than in the other runs of its group. "
        "Had every run's host been as fast as its group's typical run, the errors would be: "
        + ", ".join(f"{k.replace('_', ' ')} {'—' if v is None else f'{v:.1%}'}" for k, v in adjusted.items())
        + " (a diagnostic, not the target)."
    )
if summary.get("queue_mape") is not None and summary.get("queue_abs_err_median_s") is not None:
    st.caption(
        f"Queue time: MAPE {summary['queue_mape']:.1%}, median absolute error "
        f"{summary['queue_abs_err_median_s']:.3f} s — in runs whose requests barely queue (a step or two) a few "
        "milliseconds are a large relative error. "
        + (
            f"First engine step: median error {summary['first_step_err_median']:.0%}; vLLM's first forward pass pays "
            "one-off costs the step model has no term for (runs where it explains a miss say so in their notes)."
            if summary.get("first_step_err_median") is not None
            else ""
        )
    )
for skip in report["skipped"]:
    st.caption(f"Skipped {skip['run_id']}: {skip['reason']}")
mmw_rows = mmw_frame("held-out runs (k-fold)", summary.get("held_out_runs_mmw") or {})
layouts = summary.get("held_out_layouts") or {}
mmw_rows += mmw_frame("held-out layouts", layouts.get("overall") or {})
if mmw_rows:
    st.markdown("**Median, mean and worst error on held-out data** (worst keeps its sign; a layout row is scored by "
                "a fit of its host that saw no run of that DP/TP/PP layout)")  # fmt: skip
    st.dataframe(pl.DataFrame(mmw_rows), hide_index=True, width="stretch", key="fid_mmw",
                 column_config={c: st.column_config.NumberColumn(c, format="percent")
                                for c in ("median |err|", "mean |err|", "worst err")})  # fmt: skip

# Scatter per figure and residuals by regime
figure = st.selectbox(
    "Figure", list(FIGURE_LABELS), format_func=FIGURE_LABELS.__getitem__,
    key=links.seed_widget("fig", links.page_param("fig") if links.page_param("fig") in FIGURE_LABELS
                          else "completion_s"),
)  # fmt: skip
links.set_page_param("fig", None if figure == "completion_s" else figure)
left, right = st.columns(2)
left.plotly_chart(scatter(rows, figure), width="stretch", key="fid_scatter", config={"displaylogo": False})
right.plotly_chart(residual_box(rows, figure), width="stretch", key="fid_residuals", config={"displaylogo": False})


def stats_frame(groups: dict[str, dict[str, Any]], label: str) -> pl.DataFrame:
    return pl.DataFrame([{label: name, "runs": g["runs"], "completion (median |err|)": g["completion_err_median"],
                          "cliff onset (median |err|)": g["cliff_onset_err_median"], "TTFT MAPE": g["ttft_mape"],
                          "TPOT MAPE": g["tpot_mape"], "E2E MAPE": g["e2e_mape"]}
                         for name, g in groups.items()])  # fmt: skip


pct_columns = {
    c: st.column_config.NumberColumn(c, format="percent")
    for c in ("completion (median |err|)", "cliff onset (median |err|)", "TTFT MAPE", "TPOT MAPE", "E2E MAPE")
}
c1, c2 = st.columns(2)
c1.markdown("**By regime** (capacity-bound: the run preempted; otherwise the engine's bound)")
c1.dataframe(stats_frame(summary["by_regime"], "regime"), hide_index=True, width="stretch",
             column_config=pct_columns, key="fid_by_regime")  # fmt: skip
c2.markdown("**By vLLM version** (drift after an upgrade shows here)")
c2.dataframe(stats_frame(summary["by_vllm_version"], "vLLM"), hide_index=True, width="stretch",
             column_config=pct_columns, key="fid_by_version")  # fmt: skip

# Every run, worst first, each linking to its overlay on the Runs page
st.subheader("Runs, worst first")
table = pl.DataFrame([
    {
        "overlay": runs_link([r["run_id"]]),
        "run": r["name"],
        "regime": r["regime"],
        "over-saturated": r["over_saturated"],
        "worst |err|": run_score(r),
        "host step speed (×group)": r.get("step_speed_index"),
        "completion": r["figures"]["completion_s"]["err"],
        "cliff onset": r["figures"]["cliff_onset_s"]["err"],
        "TTFT": r["figures"]["ttft_mean_s"]["err"],
        "TPOT": r["figures"]["tpot_mean_s"]["err"],
        "E2E": r["figures"]["e2e_mean_s"]["err"],
        "KV capacity": r["figures"]["kv_capacity_tokens"]["err"],
        **{series_column(name): (r["series"].get(name) or {}).get("err") for name in SERIES},
        "calibration used": r["calibration"],
        "notes": "; ".join(r["notes"]),
    }
    for r in sorted(rows, key=run_score, reverse=True)
])  # fmt: skip
fmt = {
    c: st.column_config.NumberColumn(c, format="percent")
    for c in (
        "worst |err|",
        "completion",
        "cliff onset",
        "TTFT",
        "TPOT",
        "E2E",
        "KV capacity",
        *(series_column(name) for name in SERIES),
    )
}
fmt["overlay"] = st.column_config.LinkColumn("overlay", display_text="open on Runs")
fmt["host step speed (×group)"] = st.column_config.NumberColumn("host step speed (×group)", format="%.2f")
st.dataframe(table, hide_index=True, width="stretch", column_config=fmt, key="fid_runs")
worst = summary["worst_runs"][:4]
if worst:
    st.link_button(f"Overlay the {len(worst)} worst runs on the Runs page", runs_link(worst),
                   icon=":material/compare_arrows:")  # fmt: skip
st.caption(
    "Timeline errors are the mean |predicted − measured| on one time grid from the batch's submission: KV usage as "
    "a fraction of the KV pool, running requests of the measured peak, generation throughput of the measured mean "
    "rate — computed by the same engine function as the Explore and Runs overlays' errors, which score the run "
    "with the stored calibration of its hardware where this table holds it out. Measured cliff onset is the first "
    "step at which a running request went back to the queue (vLLM 0.32 counts a preemption only when the request "
    "resumes, so its counter is late)."
)

knee_section(store, rows)

# Calibrations: what is stored, and fitting a new one
st.subheader("Stored calibrations")
stored = store.calibrations()
if stored.height:
    shown_columns = ("calibration_id", "device_key", "vllm_version", "created_at", "origin", "params", "run_ids")
    st.dataframe(stored.select(shown_columns), hide_index=True, width="stretch", key="fid_calibrations")
else:
    st.caption("None yet. A stored calibration is what predictions of that hardware use; fit one below or with "
               "`python -m engine calibrate`.")  # fmt: skip
if access.unlock_form("calibrate") and st.button(
    "Fit on every run and store one calibration per hardware group", key="fid_fit"
):
    with st.spinner("Fitting…"):
        cases, _ = load_cases(store)
        origin = "fitted in this database from the Fidelity page"
        saved = [store.save_calibration({**result.as_record(), "origin": origin}) for result in fit_groups(cases)]
    st.success(f"Stored {len(saved)} calibration(s): {', '.join(saved)}")
    st.rerun()

# Published runs: public figures the GPU fit is held to (issue #11), labelled as such with their sources
st.subheader("Published runs")
if not show_published(store, key="fid_published"):
    st.caption("None in this database. `python -m engine import data/published` loads the starter set of public "
               "records (docs/formats.md).")  # fmt: skip
render_published(store)
