"""The Fidelity page's held-out published section: KV per start-up log, bench records, the paper's table — each
scored by a fit that never saw it (engine.fidelity.published_fit), with median, mean and worst.

Scoring the published records fits every held-out source and TP/PP degree on served predictions: the shipped set
(237 records, 138 of them bench runs) took 18–24 min on a 2-core host with ``--jobs 2``. So the page shows the
report that ``python -m engine validate --published --export-published`` wrote to
``data/published/fidelity-report.json`` when it was computed from the same records (same digest), and computes it on
request otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import streamlit as st

from engine.fidelity.calibrate import GPU_BOUNDS
from engine.fidelity.published_fit import published_report, records_digest, records_of, shipped_report

PCT = (
    "error",
    "median |err|",
    "mean |err|",
    "worst err",
    "duration err",
    "throughput err",
    "mean TTFT err",
    "mean TPOT err",
)


@st.cache_data(show_spinner=False, max_entries=2)
def _computed(_store: Any, digest: str) -> dict[str, Any]:
    return published_report(_store)


def _mmw_rows(scope: str, table: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"held out": scope, "figure": name, "records": t["n"], "median |err|": t["median"], "mean |err|": t["mean"],
         "worst err": t["worst"]}
        for name, t in table.items()
        if t and t.get("n")
    ]  # fmt: skip


def _table(rows: list[dict[str, Any]], key: str) -> None:
    config = {c: st.column_config.NumberColumn(c, format="percent") for c in PCT if rows and c in rows[0]}
    st.dataframe(pl.DataFrame(rows), hide_index=True, width="stretch", key=key, column_config=config)


def render_published(store: Any) -> None:
    """Draw the published section (records of the database, else data/published/)."""
    st.subheader("Published runs: public GPU figures, held out")
    records, where = records_of(store)
    if not records:
        st.caption("No published records: import some with `python -m engine import data/published`.")
        return
    digest = records_digest(records)
    report = shipped_report(digest)
    if report is None:
        st.caption(
            f"{where}; no report computed from exactly these records yet. Score them with `python -m engine validate "
            "--published --export-published FILE` (the shipped 237 records took 18–24 min on 2 cores with its worker "
            "processes; a few records take a minute), or here, in this page's one process:"
        )
        if not st.button("Score the published records now (blocks this page until done)", key="fid_pub_compute"):
            return
        with st.spinner("Fitting per held-out case and predicting…"):
            report = _computed(store, digest)
    st.caption(
        f"{report['records']}; computed {report['computed_at']} (`python -m engine validate --published`). Each "
        "bench record is predicted by a fit of its GPU on other sources only; each paper case by a fit on the "
        "other cases only. Errors are (predicted − published) / published."
    )
    draw_report(report)


def draw_report(report: dict[str, Any]) -> None:
    kv = report["kv"]
    st.markdown(f"**KV capacity against start-up logs** ({kv['records']} logs)")
    kv_rows = [{"record": r["record"], "figure": r["figure"], "published": r["published"],
                "predicted": r["predicted"], "error": r["err"], "why a miss misses": r["explanation"]}
               for r in kv["rows"]]  # fmt: skip
    _table(kv_rows, "fid_pub_kv")
    _table(_mmw_rows("start-up logs", {"KV capacity": kv["summary"]}), "fid_pub_kv_mmw")
    bench = report["bench"]
    st.markdown(f"**Bench records** ({bench['scored']} scored of {bench['records']}, leave-one-source-out)")
    if bench.get("note"):
        st.caption(bench["note"])
    if bench["rows"]:
        _table([{"record": r["record"], "GPU": r["device"], "layout": r["layout"], "model": r["model"],
                 "duration err": r["err_duration_s"], "throughput err": r["err_output_throughput"],
                 "mean TTFT err": r["err_mean_ttft_ms"], "mean TPOT err": r["err_mean_tpot_ms"],
                 "TPOT derived": r.get("derived", {}).get("mean_tpot_ms", ""), "source": r["source"]}
                for r in bench["rows"]], "fid_pub_bench")  # fmt: skip
        _table(_mmw_rows("bench records", bench["summary"]), "fid_pub_bench_mmw")
        if bench.get("tpot_derived"):
            st.caption(
                f"Mean TPOT of {bench['tpot_derived']} records is derived, not printed: every request generated the "
                "same L tokens, so it is (mean E2EL − mean TTFT) / (L − 1) exactly (column 'TPOT derived'). "
                "Scored on the records that print it only:"
            )
            printed = {"mean_tpot_ms": bench["summary_tpot_printed"]}
            _table(_mmw_rows("bench records that print TPOT", printed), "fid_pub_bench_tpot_printed")
        if bench.get("summary_degree_held_out"):
            st.caption("The same records, each predicted by a fit that never saw its TP/PP degree:")
            _table(_mmw_rows("bench records, degree held out", bench["summary_degree_held_out"]), "fid_pub_bench_deg")
        draw_fold_fits(bench.get("fold_fits") or [])
    draw_paper(report["paper"])


def fold_fit_rows(fold_fits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per fitted parameter of each held-out fold's fit, beside the datasheet figure it is a fraction of
    (efficiencies) and the bound it was stopped at, if any. The fold's long description comes last, so the figures
    stay in view without scrolling the table sideways."""
    rows = []
    for fold in fold_fits:
        for p in fold["parameters"]:
            name = p.get("datasheet_name") or ""
            scale, unit = _datasheet_unit(name)
            rows.append(
                {"held out": fold["held_out"], "device": fold["device"], "parameter": p["parameter"],
                 "value": p["value"], "×/÷ uncertainty": _spread(p.get("sigma_log")),
                 "effective": _scaled(p.get("effective"), scale), "datasheet": _scaled(p.get("datasheet"), scale),
                 "unit": unit, "datasheet figure": name, "default": p.get("default"),
                 "at bound": p.get("at_bound") or "", "fit": fold["calibration"]}
            )  # fmt: skip
    return rows


def _datasheet_unit(name: str) -> tuple[float, str]:
    """The scale and unit a datasheet figure is shown in, by its gpus.toml name (bf16_flops, hbm_bytes_per_s,
    link_bytes_per_s; calibrate.EFFICIENCY_PEAK); a name of neither kind is shown as stored."""
    if name.endswith("_flops"):
        return 1e12, "TFLOPS"
    if name.endswith("_bytes_per_s"):
        return 1e9, "GB/s"
    return 1.0, ""


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value / scale


def _spread(sigma_log: float | None) -> float | None:
    return None if sigma_log is None else math.exp(sigma_log)


def draw_fold_fits(fold_fits: list[dict[str, Any]]) -> None:
    if not fold_fits:
        return
    rows = fold_fit_rows(fold_fits)
    flagged = sum(1 for row in rows if row["at bound"])
    with st.expander(f"Fitted parameters of each held-out fold ({len(fold_fits)} fits; {flagged} at a bound)"):
        st.caption(
            "Each fold is fitted in two stages: every GPU of its engine generation outside the fold, then the "
            "device's own records outside the fold refit its memory and compute efficiencies (a device with no "
            "other source is scored by the first stage alone; docs/fidelity.md). Each parameter beside the "
            "datasheet figure an efficiency is a fraction of (effective = value × datasheet). A parameter at a "
            "bound is flagged: the fit wanted to go past a physical limit "
            f"(engine.fidelity.calibrate.GPU_BOUNDS: ≤ {GPU_BOUNDS['step_overhead_s'][1] * 1e3:g} ms of host time "
            f"per step, ≤ {GPU_BOUNDS['per_seq_overhead_s'][1] * 1e6:g} µs per sequence, …), which means the step "
            "model misses a cost on those records."
        )
        st.dataframe(pl.DataFrame(rows), hide_index=True, width="stretch", key="fid_pub_folds")


def draw_paper(paper: dict[str, Any]) -> None:
    st.markdown(f"**The paper's table** ({paper['source']}): each case predicted by a fit that never saw it")
    rows = [{"case": r["case"], "layout": r["layout"], "published (s)": r["published_s"],
             "predicted (s)": r["predicted_s"], "error": r["err"], "physical floor (s)": r["floor_s"],
             "fitted on (cases)": ", ".join(r.get("train_cases") or []),
             "note": "" if r["reachable"] else "below the physical floor: not fitted"}
            for r in paper["rows"]]  # fmt: skip
    _table(rows, "fid_pub_paper")
    _table(_mmw_rows("paper cases", {"completion time": paper["summary"]}), "fid_pub_paper_mmw")
    for case, order in paper["order"].items():
        verdict = "best layout agrees" if order["best_agrees"] else "best layout differs"
        st.caption(f"{case}: published {' < '.join(order['published'])}; predicted "
                   f"{' < '.join(order['predicted'])} — {verdict}")  # fmt: skip
    with st.expander("Output lengths per model family, defaults, fitted parameters"):
        for entry in paper["output_lengths"].values():
            st.markdown(f"- **{entry['family']}**: {entry['source']}")
        st.caption(
            "Unstated flags take vLLM's defaults: " + ", ".join(f"{k}={v}" for k, v in paper["defaults"].items())
        )
        fit_all = paper["fits"].get("all")
        if fit_all:
            st.dataframe(pl.DataFrame([{k: p[k] for k in ("parameter", "value", "low", "high", "datasheet_name",
                                                            "datasheet", "at_bound")} for p in fit_all["parameters"]]),
                         hide_index=True, width="stretch", key="fid_pub_params")  # fmt: skip
            for warning in fit_all["warnings"]:
                st.warning(warning, icon=":material/report:")
