"""Downloads: tables round-trip through CSV and Parquet; a chart renders to PNG through kaleido and Chromium."""

from __future__ import annotations

import io
import shutil

import plotly.graph_objects as go
import polars as pl
import pytest

from pages.ui.exports import file_stem, frame_bytes, png_of, prediction_files


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


def test_a_prediction_downloads_as_labelled_tables_and_a_summary_that_reproduces_it() -> None:
    import json

    from engine.scenario import Scenario
    from engine.simulate import predict

    pred = predict(Scenario(num_requests=50, max_num_seqs=16, workload="fixed:128,256"))
    files = {f.name: f for f in prediction_files(pred, {"v": "1", "num_requests": "50"}, "stem")}
    assert sorted(files) == ["stem-requests.csv", "stem-requests.parquet", "stem-summary.json",
                             "stem-timelines.csv", "stem-timelines.parquet"]  # fmt: skip
    timeline = pl.read_csv(io.BytesIO(files["stem-timelines.csv"].data))
    assert timeline.height == pred.timeline.height and set(timeline["role"]) == {"predicted"}
    requests = pl.read_parquet(io.BytesIO(files["stem-requests.parquet"].data))
    assert requests.height == 50 and requests.drop("role", "source").equals(pred.requests)
    summary = json.loads(files["stem-summary.json"].data)
    assert summary["role"] == "predicted" and summary["link_params"]["num_requests"] == "50"
    assert summary["summary"]["completion_s"] == pred.summary["completion_s"]


def test_file_names_are_safe_everywhere() -> None:
    assert file_stem("cliffscope-predicted", "Qwen/Qwen3 32B", "8xH200") == "cliffscope-predicted-Qwen_Qwen3_32B-8xH200"
