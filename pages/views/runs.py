"""Runs: the measured runs, up to four compared on aligned timelines, each beside its own prediction, with the
per-request distributions and downloads of what is shown."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
import streamlit as st

from pages.ui import access, compare, data, links
from pages.ui.charts import Series, cdf_figure
from pages.ui.errors import explain, page_done
from pages.ui.exports import frame_bytes, png_of
from pages.ui.predictions import Prediction, run_prediction
from pages.ui.published import show_published
from pages.ui.timelines import Source, missing_panels, timelines_figure

MAX_COMPARE = 4
FILTERS = (("f_model", "model_name", "Model"), ("f_device", "device", "Device"), ("f_layout", "layout", "Layout"),
           ("f_source", "source", "Source"), ("f_status", "status", "Status"))  # fmt: skip
METRICS = {"ttft_s": "TTFT (s)", "tpot_s": "TPOT (s/token)", "e2e_s": "E2E latency (s)", "queue_s": "queue time (s)"}
ALIGN = {"start": "batch start", "cliff": "cliff onset (first preemption)"}


def shift(frame: pl.DataFrame, onset: float | None, align: str) -> pl.DataFrame:
    if align == "cliff" and onset is not None:
        return frame.with_columns(pl.col("t_s") - onset)
    return frame


st.title("Measured runs")
store = data.get_store()
for line in data.ingest_inbox(store):
    st.toast(f"From the collectors' inbox: {line}", icon=":material/inbox:")
all_runs = data.runs_table(store)
if all_runs.height == 0:
    st.info("The run database is empty. Add runs on the Upload page, or with `python -m collectors`.",
            icon=":material/info:")  # fmt: skip
    page_done()

# Filters (each in the URL as f_*)
cols = st.columns(len(FILTERS))
filters: dict[str, str] = {}
for col, (url_key, column, label) in zip(cols, FILTERS, strict=True):
    options = ["any", *sorted({str(v) for v in all_runs[column].drop_nulls().to_list()})]
    wanted = links.page_param(url_key) if links.page_param(url_key) in options else "any"
    key = links.seed_widget(url_key, wanted)
    if st.session_state.get(key) not in options:
        links.reseed_widget(url_key, "any")
    choice = col.selectbox(label, options, key=key)
    links.set_page_param(url_key, None if choice == "any" else choice)
    if choice != "any":
        filters[column] = choice
shown = all_runs
for column, value in filters.items():
    shown = shown.filter(pl.col(column).cast(pl.String) == value)

st.dataframe(
    shown.select("name", "run_id", "model_name", "device", "layout", "max_num_seqs", "num_requests", "workload",
                 "source", "source_ref", "status", "created_at"),
    hide_index=True, width="stretch", height=min(38 + 35 * shown.height, 250), key="runs_table",
    column_config={"source_ref": st.column_config.LinkColumn("source link", display_text="published source")},
)  # fmt: skip
published_ids = shown.filter(pl.col("source") == "published")["run_id"].to_list()
if published_ids:
    with st.expander(f"Published runs in this list ({len(published_ids)}): the figures their sources state"):
        show_published(store, key="runs_published", run_ids=published_ids)

# Selection (URL: runs=a,b,c); published runs have no timelines to compare
names = dict(zip(all_runs["run_id"].to_list(), all_runs["name"].to_list(), strict=True))
timeline_runs = set(all_runs.filter(pl.col("source") != "published")["run_id"].to_list())
ids = [r for r in shown["run_id"].to_list() if r in timeline_runs]
from_url = [r for r in links.csv_list(links.page_param("runs")) if r in timeline_runs]
unknown = [r for r in links.csv_list(links.page_param("runs")) if r not in names]
if unknown:
    st.warning(f"The link named run(s) not in this database: {', '.join(unknown)}; they were left out.",
               icon=":material/warning:")  # fmt: skip
default_sel = from_url[:MAX_COMPARE] or ids[:1]
sel_key = links.seed_widget("runs", default_sel)
options = list(dict.fromkeys([*ids, *st.session_state.get(sel_key, [])]))
selected: list[str] = st.multiselect(
    f"Compare runs (up to {MAX_COMPARE})", options, key=sel_key, max_selections=MAX_COMPARE,
    format_func=lambda r: f"{names.get(r, r)} ({r})",
)  # fmt: skip
links.set_page_param("runs", links.join_list(selected) if selected != ids[:1] else None)
if not selected:
    st.info("Pick one or more runs above to see their timelines.")
    page_done()

align = st.radio(
    "Align timelines at", list(ALIGN), format_func=ALIGN.__getitem__, horizontal=True,
    key=links.seed_widget("align", links.page_param("align") if links.page_param("align") in ALIGN else "start"),
)  # fmt: skip
links.set_page_param("align", None if align == "start" else align)

# Sources: each run (measured) paired with its own prediction
sources: list[Source] = []
explanations: list[str] = []
summaries: list[dict[str, object]] = []
predictions: dict[str, Prediction] = {}
for i, run_id in enumerate(selected):
    label = f"run {names.get(run_id, run_id)}"
    msum = data.run_summary(store, run_id) or {}
    pred, why = run_prediction(store, run_id)
    if pred is not None:
        predictions[run_id] = pred
        explanations.append(compare.calibration_note(label, pred))
        p_onset = pred.summary.get("cliff_onset_s")
        sources.append(Source("predicted", f"engine for {label}", shift(pred.timeline, p_onset, align), 0.0 if
                              align == "cliff" and p_onset is not None else p_onset, index=i))  # fmt: skip
    else:
        explanations.append(f"No prediction for {label}: {why}.")
    m_onset = msum.get("cliff_onset_s")
    frame = shift(data.measured_timeline(store, run_id), m_onset, align)
    errors = None if pred is None else compare.overlay_errors(store, run_id, pred)
    sources.append(Source("measured", label, frame, 0.0 if align == "cliff" and m_onset is not None else m_onset,
                          index=i, errors=errors))  # fmt: skip
    row = {"run": label, **{f"measured {k}": msum.get(k) for k in ("completion_s", "cliff_onset_s", "preemptions")}}
    if pred is not None:
        row.update({f"predicted {k}": pred.summary.get(k) for k in ("completion_s", "cliff_onset_s", "preemptions")})
    summaries.append(row)
for text in explanations:
    st.caption(text)

st.subheader("Timelines")
st.caption("Measured series are solid orange, each run's own prediction (same parameters, same request list) dashed "
           "blue; each run keeps its own shade on every row, and its waiting requests are drawn dotted (measured) or "
           "dash-dotted (predicted) beside its running ones. The legend gives each measured series' error against its "
           "prediction. " + compare.ERRORS_EXPLAINED)  # fmt: skip
figures: dict[str, go.Figure] = {}
timelines = timelines_figure(sources, title="Measured runs (solid) and each run's own prediction (dashed)")
if timelines is not None:
    st.plotly_chart(timelines, width="stretch", key="runs_timelines", config={"displaylogo": False})
    figures["timelines"] = timelines
missing = missing_panels(sources)
if missing:
    st.caption(f"Not drawn, no selected run or prediction has the series: {', '.join(missing)}.")
st.dataframe(pl.DataFrame(summaries), hide_index=True, width="stretch", key="runs_summary")

st.subheader("Per-request distributions")
metric = st.radio(
    "Metric", list(METRICS), format_func=METRICS.__getitem__, horizontal=True,
    key=links.seed_widget("metric", links.page_param("metric") if links.page_param("metric") in METRICS else "e2e_s"),
)  # fmt: skip
links.set_page_param("metric", None if metric == "e2e_s" else metric)
cdf_series: list[Series] = []
pct_rows = []
request_frames = []
for i, run_id in enumerate(selected):
    label = f"run {names.get(run_id, run_id)}"
    reqs = data.run_requests(store, run_id)
    request_frames.append(reqs.with_columns(pl.lit(run_id).alias("run_id")))
    values = reqs[metric].drop_nulls().to_numpy()
    cdf_series.append(Series("measured", label, values, values, index=i))
    rows = {"series": f"measured · {label}", "n": len(values)}
    rows.update({f"p{q}": float(np.percentile(values, q)) if len(values) else None for q in (50, 90, 99)})
    pct_rows.append(rows)
    pred = predictions.get(run_id)
    if pred is not None and metric in pred.requests.columns:
        pvalues = pred.requests[metric].drop_nulls().to_numpy()
        cdf_series.append(Series("predicted", f"engine for {label}", pvalues, pvalues, index=i))
        prow = {"series": f"predicted · engine for {label}", "n": len(pvalues)}
        prow.update({f"p{q}": float(np.percentile(pvalues, q)) if len(pvalues) else None for q in (50, 90, 99)})
        pct_rows.append(prow)
cdf = cdf_figure(cdf_series, title=f"{METRICS[metric]} per request", x_title=METRICS[metric])
figures["cdf"] = cdf
# Full width, the percentiles below: beside a table, the legend's long run names were cut off at 1280 px.
st.plotly_chart(cdf, width="stretch", key="runs_cdf", config={"displaylogo": False})
st.dataframe(pl.DataFrame(pct_rows), hide_index=True, width="stretch", key="runs_percentiles")

st.subheader("Download what is shown")
timeline_rows = pl.concat(
    [s.frame.with_columns(pl.lit(s.role).alias("role"), pl.lit(s.label).alias("source")) for s in sources],
    how="diagonal_relaxed",
)
requests_rows = pl.concat(request_frames, how="diagonal_relaxed")
d = st.columns(4)
d[0].download_button("Timelines (CSV)", frame_bytes(timeline_rows, "csv"), "timelines.csv", "text/csv",
                     key="dl_tl_csv", on_click="ignore")  # fmt: skip
d[1].download_button("Timelines (Parquet)", frame_bytes(timeline_rows, "parquet"), "timelines.parquet",
                     "application/octet-stream", key="dl_tl_parquet", on_click="ignore")  # fmt: skip
d[2].download_button("Requests (CSV)", frame_bytes(requests_rows, "csv"), "requests.csv", "text/csv",
                     key="dl_rq_csv", on_click="ignore")  # fmt: skip
d[3].download_button("Requests (Parquet)", frame_bytes(requests_rows, "parquet"), "requests.parquet",
                     "application/octet-stream", key="dl_rq_parquet", on_click="ignore")  # fmt: skip
png_cols = st.columns(len(figures))
for col, (key, fig) in zip(png_cols, figures.items(), strict=True):
    col.download_button(f"{key} (PNG)", png_of(fig), f"{key}.png", "image/png", key=f"dl_png_{key}",
                        on_click="ignore")  # fmt: skip


def delete_run(run_id: str, selection_key: str) -> None:
    """Button callback (runs before the page is drawn, so the selection can still be changed)."""
    try:
        existed = data.get_store().delete_run(run_id)
    except Exception as exc:
        st.session_state["_cs_delete_error"] = f"Could not delete {run_id}: {explain(exc)}"
        return
    data.clear_store_queries()
    st.session_state[selection_key] = [r for r in st.session_state.get(selection_key, []) if r != run_id]
    st.session_state["_cs_delete_done"] = f"Deleted run {run_id}." if existed else f"Run {run_id} was already gone."


with st.expander("Delete a run"):
    if access.unlock_form("delete"):
        victim = st.selectbox("Run to delete", selected, key="delete_choice", format_func=lambda r: names.get(r, r))
        st.button(f"Delete run {victim} and all its samples", key="delete_run", on_click=delete_run,
                  args=(victim, sel_key))  # fmt: skip
    for flag, show in (("_cs_delete_error", st.error), ("_cs_delete_done", st.success)):
        if st.session_state.get(flag):
            show(st.session_state.pop(flag))
