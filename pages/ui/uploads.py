"""Upload preview: read and validate a file in memory, so the page can show the report before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import streamlit as st

from engine.formats import DEFAULT_LIMITS, ParsedRun, ValidationError, validate_run
from engine.formats.detect import read_bytes


@dataclass
class Preview:
    """What a file would become: its runs (validated) or the problems that stop it; nothing written either way."""

    runs: list[ParsedRun] = field(default_factory=list)
    problems: list[dict[str, object]] = field(default_factory=list)


@st.cache_data(show_spinner="Checking the file…", max_entries=8)
def preview(content: bytes, filename: str) -> Preview:
    suffix = Path(filename).suffix.lower()
    try:
        parsed = read_bytes(content, filename, DEFAULT_LIMITS, suffix=suffix)
        runs = [validate_run(run, DEFAULT_LIMITS) for run in parsed]
    except ValidationError as exc:
        problems = [
            {"file": p.file, "row": p.row, "column": p.column, "problem": p.message, "fix": p.fix} for p in exc.problems
        ]
        return Preview(problems=problems)
    return Preview(runs=runs)


def run_rows(runs: list[ParsedRun]) -> pl.DataFrame:
    """One line per run in the file: what it is and how many rows each table holds."""
    rows = []
    for run in runs:
        meta = run.meta
        rows.append(
            {
                "run_id": meta.get("run_id"),
                "name": meta.get("name"),
                "model": meta.get("model_name"),
                "device": meta.get("device"),
                "layout": f"DP{meta.get('dp')}·TP{meta.get('tp')}·PP{meta.get('pp')}",
                "requests": run.tables["requests"].num_rows if "requests" in run.tables else 0,
                "engine samples": run.tables["engine_samples"].num_rows if "engine_samples" in run.tables else 0,
                "GPU samples": run.tables["gpu_samples"].num_rows if "gpu_samples" in run.tables else 0,
                "read as": run.origin,
                "fields not in the file": ", ".join(run.missing) or "—",
            }
        )
    return pl.DataFrame(rows)


def show_published_preview(run: ParsedRun) -> None:
    """A published record's preview: its source, the figures it states and the flags it leaves unstated."""
    record = run.published
    with st.expander(f"Published {record.kind.value} record {record.id}: source and figures", expanded=True):
        st.markdown(f"**Source:** {record.source.reference}  \n**Checked:** {record.source.checked}")
        st.dataframe(
            pl.DataFrame({"figure": [n for n, _ in record.figures], "value": [float(v) for _, v in record.figures]}),
            hide_index=True, width="stretch",
        )  # fmt: skip
        unstated = ", ".join(record.server.unstated) or "none"
        st.caption(f"Server flags the source does not state (vLLM's defaults apply): {unstated}.")
