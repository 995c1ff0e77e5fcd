"""Downloads of what a page shows: tables as CSV or Parquet, charts as PNG (kaleido drives the local Chromium)."""

from __future__ import annotations

import io
from collections.abc import Callable

import plotly.graph_objects as go
import polars as pl

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
