"""Upload: a run file is previewed and validated first; only a clean file is ingested, in one transaction."""

from __future__ import annotations

import hashlib

import polars as pl
import streamlit as st

from engine.formats import ValidationError
from engine.formats.accepted import ACCEPTED_FORMATS, refusal
from engine.formats.prometheus_live import LiveQuery, fetch_window, parse_time
from pages.ui import access, data, uploads
from pages.ui.errors import explain, page_done

UPLOAD_LIMIT_MB = 200  # per file; also server.maxUploadSize in .streamlit/config.toml
_LAST = "_cs_last_ingest"
_LIVE = "_cs_live_fetch"


class _Fetched:
    """A window fetched from a live Prometheus, shaped like an uploaded file (name, getvalue) for the checks below."""

    def __init__(self, name: str, content: bytes) -> None:
        self.name, self._content = name, content

    def getvalue(self) -> bytes:
        return self._content


def _live_form() -> None:
    """query_range for one server's vLLM and DCGM series over a window; kept as the file to check and ingest."""
    with st.expander("…or import a window from a live Prometheus"), st.form("upload_live"):
        url = st.text_input("Prometheus URL", placeholder="http://prometheus:9090", key="live_url")
        start = st.text_input("Start (RFC 3339 or unix seconds)", placeholder="2026-12-02T12:00:00Z", key="live_start")
        end = st.text_input("End", placeholder="2026-12-02T12:10:00Z", key="live_end")
        selector = st.text_input("vLLM series selector", placeholder='instance="10.0.0.5:8000"', key="live_selector")
        dcgm = st.text_input("DCGM series selector", placeholder='Hostname="node-1"', key="live_dcgm")
        if not st.form_submit_button("Fetch the window"):
            return
    try:
        query = LiveQuery(url=url.strip(), start=parse_time(start, "start"), end=parse_time(end, "end"),
                          selector=selector, dcgm_selector=dcgm)  # fmt: skip
        with st.spinner("Querying Prometheus…"):
            st.session_state[_LIVE] = (query.display, fetch_window(query))
    except ValidationError as exc:
        st.session_state.pop(_LIVE, None)
        st.error(f"**Nothing fetched.** {explain(exc)}", icon=":material/error:")


st.title("Upload a run")
st.caption(
    "A run bundle, a `vllm bench serve` result or sweep, a GuideLLM report, a Prometheus scrape or query_range "
    "export (vLLM and DCGM series), a CSV/Parquet table, or a published record (.toml, `cliffscope-published/1`), "
    f"also as .gz, .zst or .zip. **Limit: {UPLOAD_LIMIT_MB} MB per file** (and 2 GiB unpacked). The file is checked "
    "first; nothing is written unless every check passes."
)
with st.expander("Accepted formats: an example of each, what writes it, what it cannot supply"):
    st.dataframe(
        [{"format": f.name, "extensions": " ".join(f.suffixes), "example": f.example, "written by": f.made_by,
          "cannot supply (stored as unknown)": f.lacks,
          "docs/formats.md": f"section {f.section}" if f.section[:1].isdigit() else f.section}
         for f in ACCEPTED_FORMATS],
        hide_index=True, width="stretch", key="upload_formats",
    )  # fmt: skip
if not access.unlock_form("upload"):
    page_done()

# No type= filter: the widget would refuse other files with a bare red icon; the name is checked below instead.
uploaded = st.file_uploader(
    "Run file", key="upload_file", max_upload_size=UPLOAD_LIMIT_MB, help="Formats are described in docs/formats.md."
)
_live_form()
if uploaded is None and _LIVE in st.session_state:
    uploaded = _Fetched(*st.session_state[_LIVE])

last = st.session_state.get(_LAST)
if last:
    st.success(f"Ingested: {last['summary']}", icon=":material/check_circle:")
    for run_id in last["run_ids"]:
        st.page_link("pages/views/runs.py", label=f"Open run {run_id} on the Runs page", icon=":material/table_chart:",
                     query_params={"runs": run_id})  # fmt: skip

if uploaded is not None and not isinstance(uploaded, _Fetched) and (why := refusal(uploaded.name)):
    st.error(f"**{why}** Nothing was written.", icon=":material/error:")
    page_done()
if uploaded is not None:
    content = uploaded.getvalue()
    digest = hashlib.sha256(content).hexdigest()[:12]
    st.subheader("1 · Validation report")
    result = uploads.preview(content, uploaded.name)
    if result.problems:
        st.error(
            f"**{uploaded.name} cannot be ingested: {len(result.problems)} problem(s).** Nothing was written. "
            "Each row below names where the problem is and how to fix it.",
            icon=":material/error:",
        )
        for problem in result.problems[:10]:
            where = ", ".join(
                [str(problem["file"])]
                + ([f"row {problem['row']}"] if problem["row"] is not None else [])
                + ([f"column `{problem['column']}`"] if problem["column"] else [])
            )
            st.markdown(f"- **{where}:** {problem['problem']} — *fix:* {problem['fix']}")
        st.dataframe(
            pl.DataFrame(result.problems), hide_index=True, width="stretch", key="upload_problems",
            column_config={"problem": st.column_config.TextColumn(width="medium"),
                           "fix": st.column_config.TextColumn(width="large")},
        )  # fmt: skip
    else:
        st.success(f"{uploaded.name}: {len(result.runs)} run(s) passed every check.", icon=":material/check:")
        st.dataframe(uploads.run_rows(result.runs), hide_index=True, width="stretch", key="upload_runs")
        st.subheader("2 · Preview")
        for run in result.runs[:4]:
            if run.published is not None:
                uploads.show_published_preview(run)
                continue
            with st.expander(f"Run {run.meta.get('run_id')}: first rows", expanded=len(result.runs) == 1):
                for table in ("engine_samples", "requests", "gpu_samples"):
                    if table in run.tables:
                        st.caption(f"{table} (measured, {run.tables[table].num_rows:,} rows)")
                        st.dataframe(pl.from_arrow(run.tables[table].slice(0, 5)), hide_index=True, width="stretch")
        st.subheader("3 · Ingest")
        if st.button("Ingest into the run database", type="primary", key="upload_ingest"):
            progress = st.progress(0.0, text="Writing…")
            with st.status("Ingesting…", expanded=True) as status:
                status.write(f"Checked {uploaded.name}: {len(result.runs)} run(s).")
                progress.progress(0.3, text="Writing rows in one transaction…")
                try:
                    report = data.get_store().ingest_bytes(content, uploaded.name)
                except ValidationError as exc:
                    status.update(label="Rejected; nothing was written", state="error")
                    st.error(explain(exc))
                    page_done()
                except Exception as exc:
                    status.update(label="Failed; nothing was written", state="error")
                    st.error(f"Could not ingest {uploaded.name}: {explain(exc)}")
                    page_done()
                progress.progress(1.0, text="Done")
                status.update(label="Ingested", state="complete")
            data.clear_store_queries()
            st.session_state.pop(_LIVE, None)
            st.session_state[_LAST] = {
                "summary": report.summary(),
                "run_ids": [r.run_id for r in report.runs],
                "digest": digest,
            }
            st.rerun()
