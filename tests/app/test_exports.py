"""Downloads: tables round-trip through CSV and Parquet; a chart renders to PNG through kaleido and Chromium."""

from __future__ import annotations

import io
import shutil

import plotly.graph_objects as go
import polars as pl
import pytest

from pages.ui.exports import frame_bytes, png_of


def test_tables_round_trip() -> None:
    frame = pl.DataFrame({"t_s": [0.0, 1.5], "series": ["kv_usage", "kv_usage"], "value": [0.1, 0.9]})
    assert pl.read_csv(io.BytesIO(frame_bytes(frame, "csv"))).equals(frame)
    assert pl.read_parquet(io.BytesIO(frame_bytes(frame, "parquet"))).equals(frame)
    with pytest.raises(ValueError, match="csv or parquet"):
        frame_bytes(frame, "xlsx")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="kaleido needs Debian's chromium")
def test_a_chart_renders_to_png() -> None:
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], name="measured · run x"))
    png = png_of(fig)()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
