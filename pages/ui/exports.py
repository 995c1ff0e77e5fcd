"""Downloads of what a page shows: tables as CSV or Parquet, charts as PNG (kaleido drives the local Chromium)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import polars as pl

from engine.simulate import Prediction

PNG_SIZE = {"width": 1200, "height": 500, "scale": 1}


def png_of(fig: go.Figure) -> Callable[[], bytes]:
    """Deferred PNG export: rendering takes a browser start (seconds), so it runs only when the download is clicked."""

    def render() -> bytes:
        # a figure that sets its own height (the stacked timelines) keeps it, so its rows are not squeezed
        size = {**PNG_SIZE, "height": fig.layout.height or PNG_SIZE["height"]}
        return fig.to_image(format="png", **size)

    return render


def frame_bytes(frame: pl.DataFrame, fmt: str) -> bytes:
    """A table as ``csv`` or ``parquet`` bytes."""
    buf = io.BytesIO()
    if fmt == "csv":
        frame.write_csv(buf)
    elif fmt == "parquet":
        frame.write_parquet(buf)
    else:
        raise ValueError(f"unknown table format {fmt!r}; use csv or parquet")
    return buf.getvalue()


def json_bytes(value: Any) -> bytes:
    """Indented JSON; numpy scalars become numbers, anything else unknown its text."""
    return json.dumps(value, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)).encode()


def file_stem(*parts: str) -> str:
    """A download's file name from its parts, safe on every OS: 'cliffscope-predicted-Llama-3.1-8B-8xH200'."""
    return "-".join(re.sub(r"[^A-Za-z0-9.-]+", "_", part).strip("_") for part in parts if part)


@dataclass(frozen=True)
class Download:
    label: str
    data: bytes
    name: str
    mime: str


def prediction_files(pred: Prediction, link_params: Mapping[str, str], stem: str) -> list[Download]:
    """A prediction as files: its timelines and requests (CSV and Parquet, each row labelled predicted and by whom,
    as the Runs page labels measured rows) and a JSON summary with the link parameters that reproduce it."""
    labelled = {"role": "predicted", "source": "cliffscope engine, this scenario"}
    files = []
    for label, name, frame in (("Timelines", "timelines", pred.timeline), ("Requests", "requests", pred.requests)):
        rows = frame.with_columns(**{key: pl.lit(value) for key, value in labelled.items()})
        files.append(Download(f"{label} (CSV)", frame_bytes(rows, "csv"), f"{stem}-{name}.csv", "text/csv"))
        files.append(Download(f"{label} (Parquet)", frame_bytes(rows, "parquet"), f"{stem}-{name}.parquet",
                              "application/octet-stream"))  # fmt: skip
    summary = {**labelled, "link_params": dict(link_params), "summary": pred.summary.as_dict()}
    files.append(Download("Summary (JSON)", json_bytes(summary), f"{stem}-summary.json", "application/json"))
    return files
