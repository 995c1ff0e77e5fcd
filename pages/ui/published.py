"""Published runs on the dashboard: a table of what public sources state, each row labelled `published` with its link.

Published runs carry no timelines (a source prints summary figures only), so pages list them beside measured runs
instead of drawing them; the figures shown are the source's own, in its units, and the link opens the source.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import streamlit as st

from engine.store import Store
from pages.ui import data

# The figures most records state, in the order a reader compares them (units in the names, as in the format).
KEY_FIGURES = (
    "completion_s", "duration_s", "completed", "output_throughput", "mean_ttft_ms", "mean_tpot_ms", "mean_e2el_ms",
    "kv_cache_tokens",
)  # fmt: skip


@data.cleared_with_store
@st.cache_data(show_spinner=False, ttl=600)
def published_frame(_store: Store, kind: str | None = None) -> pl.DataFrame:
    """One row per published run: what, where, from which source, and its key figures as stated."""
    frame = _store.published_runs(kind)
    rows: list[dict[str, Any]] = []
    for row in frame.iter_rows(named=True):
        figures = json.loads(row["figures_json"])
        rows.append(
            {
                "source": "published",
                "run_id": row["run_id"],
                "kind": row["kind"],
                "gpu": f"{row['num_gpus']}×{row['gpu']}",
                "model": row["model_name"],
                "layout": row["layout"],
                "vLLM": row["vllm_version"],
                **{name: figures.get(name) for name in KEY_FIGURES},
                "link": _link(row["source_ref"]),
                "cited as": row["source_ref"],
            }
        )
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def _link(reference: str | None) -> str | None:
    return reference if reference and reference.startswith("https://") else None


def show_published(store: Store, *, key: str, kind: str | None = None, run_ids: list[str] | None = None) -> int:
    """Draw the published runs (optionally one kind, or only ``run_ids``); returns how many were shown."""
    frame = published_frame(store, kind)
    if frame.height and run_ids is not None:
        frame = frame.filter(pl.col("run_id").is_in(run_ids))
    if frame.height == 0:
        return 0
    empty = [name for name in KEY_FIGURES if frame[name].null_count() == frame.height]
    st.dataframe(
        frame.drop(empty), hide_index=True, width="stretch", key=key,
        column_config={"link": st.column_config.LinkColumn("link", display_text="source"),
                       "cited as": st.column_config.TextColumn("cited as", width="medium")},
    )  # fmt: skip
    st.caption(
        "Published: figures as their sources state them (units in the column names), not measured here and not "
        "predicted. `python -m engine import data/published` loads the starter set; each record's quote lines, "
        "stated and unstated flags are in its file (docs/formats.md)."
    )
    return frame.height
