"""Explore through AppTest: renders on the default data, controls change the figures, links restore and report."""

from __future__ import annotations

from pages.ui.controls import CONFIG_EXPANDER, ENGINE_EXPANDER
from tests.support.apptest import (
    MATCHING_PARAMS,
    MATCHING_RUN,
    chart_specs,
    heatmap_chart,
    kv_row,
    measured_cliff_charts,
    metric_values,
    new_app,
    no_exception,
    row_titles,
    scenario_charts,
    texts,
)


def test_explore_renders_predictions_on_the_default_scenario() -> None:
    at = new_app()
    at.run()
    no_exception(at)
    values = metric_values(at)
    assert "Completion time (predicted)" in values and values["Completion time (predicted)"].endswith("s")
    assert "Cliff onset (predicted)" in values
    (timelines,) = scenario_charts(at)  # one figure, the five timelines as rows over a shared time axis
    assert row_titles(timelines) == ["KV cache usage", "Running and waiting requests", "Generation throughput",
                                     "Cumulative preemptions", "HBM bandwidth utilisation"]  # fmt: skip
    axes = [k for k in timelines["layout"] if k.startswith("yaxis")]
    assert len(axes) == 5 and all("(" in timelines["layout"][k]["title"]["text"] for k in axes)  # units
    assert {t["xaxis"] for t in timelines["data"]} == {"x"}  # one shared time axis
    assert len(timelines["layout"]["shapes"]) == 1 and timelines["layout"]["shapes"][0]["yref"] == "paper"
    for spec in chart_specs(at):  # every axis carries its unit or what it counts
        assert spec["layout"]["xaxis"]["title"]["text"] and spec["layout"]["yaxis"]["title"]["text"]
        assert all(t["name"].startswith(("predicted", "measured")) for t in spec["data"])
    assert at.query_params.get("v") in ("1", ["1"])


def test_the_first_screen_shows_a_measured_cliff_labelled_as_another_run() -> None:
    """The default scenario has no run of its model and device: the nearest run with a measured cliff is shown with
    its own prediction, named, and said not to measure the scenario."""
    at = new_app()
    at.run()
    no_exception(at)
    page = texts(at)
    assert "Measured on a real vLLM engine — run `apptest" in page
    assert "not the scenario above" in page and "It is not a measurement of the scenario above" in page
    assert "apptest" in page  # the run's name (the session's store holds only apptest runs)
    assert "predicted** for this run" in page
    (chart,) = measured_cliff_charts(at)  # one figure, its two panels side by side over one time range
    assert row_titles(chart) == ["KV cache usage", "Cumulative preemptions"]
    for axis in ("y", "y2"):
        names = [t["name"] for t in chart["data"] if t["yaxis"] == axis]
        assert any(n.startswith("predicted · engine for run apptest") for n in names)
        assert any(n.startswith("measured · run apptest") for n in names)
    kv = [t["name"] for t in chart["data"] if t["yaxis"] == "y"]
    assert any("KV usage error" in name for name in kv)  # scored as the Fidelity page scores it
    assert chart["layout"]["xaxis2"]["matches"] == "x"
    # a scenario with a run of its own model and device overlays it in the timelines instead
    at = new_app(**MATCHING_PARAMS)
    at.run()
    assert "Measured on a real vLLM engine" not in texts(at)


def test_a_control_changes_the_figures() -> None:
    at = new_app()
    at.run()
    before = metric_values(at)
    kv_before = scenario_charts(at)[0]["data"][0]["y"]
    at.select_slider(key="ctl_explore_max_num_seqs").set_value(128).run()
    no_exception(at)
    after = metric_values(at)
    assert after["Peak running (predicted)"] == "128"
    assert after["Completion time (predicted)"] != before["Completion time (predicted)"]
    assert scenario_charts(at)[0]["data"][0]["y"] != kv_before


def test_a_link_restores_every_control() -> None:
    at = new_app(v="1", gpus="2", dp="1", tp="2", pp="1", max_num_seqs="256", num_requests="500", gpu="H100")
    at.run()
    no_exception(at)
    assert at.select_slider(key="ctl_explore_max_num_seqs").value == 256
    assert at.select_slider(key="ctl_explore_num_requests").value == 500
    assert at.selectbox(key="ctl_explore_layout").value == (1, 2, 1)
    assert at.selectbox(key="ctl_explore_gpu").value == "H100"
    assert at.number_input(key="ctl_explore_gpus").value == 2
    assert "2× H100" in texts(at)
    assert not at.warning  # a clean link raises no notice


def test_a_links_engine_settings_hold_while_their_expander_is_closed() -> None:
    """The "More engine settings" expander draws its controls only when opened; closed, the link's values still make the
    scenario (and stay in the URL), and opening it shows them."""
    params = {"seed": "7", "arrival_rate": "5", "kv_cache_dtype": "fp8", "max_model_len": "8192"}
    at = new_app(v="1", num_requests="100", **params)
    at.run()
    no_exception(at)
    assert "ctl_explore_seed" not in at.session_state  # its control is not drawn
    assert all(at.query_params.get(k) in (v, [v]) for k, v in params.items()), dict(at.query_params)
    assert "(seed 7)" in texts(at)
    at.session_state[ENGINE_EXPANDER] = True
    at.run()
    no_exception(at)
    assert at.number_input(key="ctl_explore_seed").value == 7
    assert at.number_input(key="ctl_explore_arrival_rate").value == 5.0
    assert at.selectbox(key="ctl_explore_kv_cache_dtype").value == "fp8"
    assert at.number_input(key="ctl_explore_max_model_len").value == 8192
    assert all(at.query_params.get(k) in (v, [v]) for k, v in params.items()), dict(at.query_params)


def test_a_tampered_link_opens_with_defaults_and_a_notice() -> None:
    at = new_app(v="1", model="no-such-model", gpus="abc", max_num_seqs="-5", block_size="7", bogus="1")
    at.run()
    no_exception(at)
    notice = "\n".join(str(w.value) for w in at.warning)
    assert "could not use" in notice
    for name in ("model", "gpus", "max_num_seqs", "block_size", "bogus"):
        assert name in notice, name
    assert at.selectbox(key="ctl_explore_model").value == "DeepSeek-R1-Distill-Llama-8B"
    assert at.select_slider(key="ctl_explore_max_num_seqs").value == 1024
    assert at.selectbox(key="ctl_explore_layout").value == (1, 1, 1)
    assert metric_values(at)["Completion time (predicted)"].endswith("s")
    at.button(key="dismiss_link_notice").click().run()
    assert not at.warning


def test_an_old_link_without_version_is_migrated() -> None:
    at = new_app(max_num_seqs="512")
    at.run()
    no_exception(at)
    assert at.select_slider(key="ctl_explore_max_num_seqs").value == 512
    assert any("older version" in str(i.value) for i in at.info)


def test_matching_measured_run_is_overlaid_with_its_error() -> None:
    at = new_app(**MATCHING_PARAMS)
    at.run()
    no_exception(at)
    assert at.selectbox(key="ctl_explore_compare").value == MATCHING_RUN
    timelines = chart_specs(at)[0]  # predicted from the run's own requests now, not "this scenario"
    assert timelines["layout"]["title"]["text"].endswith("overlaid")
    names = [t["name"] for t in kv_row(timelines)]
    assert any(n.startswith("predicted") for n in names)
    measured = [n for n in names if n.startswith("measured")]
    assert measured and "KV usage error" in measured[0] and "% of the KV pool" in measured[0]


def test_memory_and_cliff_map_tabs() -> None:
    at = new_app(v="1", num_requests="200", tab="Memory per GPU")
    at.run()
    no_exception(at)
    spec = next(s for s in chart_specs(at) if "Memory per GPU" in s["layout"].get("title", {}).get("text", ""))
    assert "Memory per GPU (predicted)" in spec["layout"]["title"]["text"]
    assert spec["layout"]["yaxis"]["title"]["text"] == "memory per GPU (GiB)"
    at = new_app(v="1", num_requests="125", workload="fixed:64,256", tab="Cliff map", map_y="num_requests")
    at.run()
    no_exception(at)
    spec = heatmap_chart(at)
    assert spec["data"][0]["type"] == "heatmap"
    assert any(t.get("name") == "this scenario" for t in spec["data"])
    assert at.selectbox(key="ctl_explore_map_y").value == "num_requests"


def test_an_uploaded_config_json_becomes_the_model() -> None:
    from pathlib import Path

    config = (Path(__file__).resolve().parents[2] / "data/models/DeepSeek-R1-Distill-Llama-8B/config.json").read_bytes()
    at = new_app(v="1", num_requests="100")
    at.run()
    assert not at.file_uploader  # drawn only once its expander is opened
    at.session_state[CONFIG_EXPANDER] = True  # what opening "Use your own config.json" does
    at.run()
    at.file_uploader(key="ctl_explore_model_config").set_value(("my-llama.json", config, "application/json")).run()
    no_exception(at)
    assert at.selectbox(key="ctl_explore_model").value.endswith("config.json")
    assert "my-llama" in texts(at)
    assert metric_values(at)["Completion time (predicted)"].endswith("s")


def test_a_broken_config_json_is_refused_with_a_reason() -> None:
    at = new_app(v="1", num_requests="100")
    at.run()
    assert not at.file_uploader  # drawn only once its expander is opened
    at.session_state[CONFIG_EXPANDER] = True  # what opening "Use your own config.json" does
    at.run()
    at.file_uploader(key="ctl_explore_model_config").set_value(("broken.json", b"{not json", "application/json")).run()
    assert not at.exception
    assert any("broken.json" in str(e.value) and "JSON" in str(e.value) for e in at.error)
    assert at.selectbox(key="ctl_explore_model").value == "DeepSeek-R1-Distill-Llama-8B"


def test_a_scenario_that_cannot_run_says_why_on_every_tab() -> None:
    for tab in ("Timelines", "Memory per GPU", "Cliff map"):
        at = new_app(v="1", model="Llama-3.1-405B", gpu="H100", tab=tab)
        at.run()
        assert not at.exception, tab
        shown = "\n".join(str(w.value) for w in [*at.warning, *at.error])
        assert "No prediction for this scenario" in shown, tab


def test_cliff_map_over_models_marks_what_cannot_run() -> None:
    at = new_app(v="1", num_requests="125", workload="fixed:64,256", tab="Cliff map", map_x="model",
                 map_y="num_requests")  # fmt: skip
    at.run()
    no_exception(at)
    heat = heatmap_chart(at)["data"][0]
    assert heat["type"] == "heatmap" and "DeepSeek-R1-Distill-Llama-8B" in heat["x"]
    assert any("cannot run" in str(e.label) for e in at.expander)


def test_the_prediction_downloads_once_their_expander_is_opened() -> None:
    at = new_app(v="1", num_requests="100")
    at.run()
    assert not at.download_button  # nothing to render on a first visit
    at.session_state["explore_downloads"] = True  # what opening "Download this prediction" does
    at.run()
    no_exception(at)
    assert [b.label for b in at.download_button] == [
        "Timelines (CSV)", "Timelines (Parquet)", "Requests (CSV)", "Requests (Parquet)", "Summary (JSON)",
        "Timelines chart (PNG)",
    ]  # fmt: skip
    assert "prediction for the scenario above" in texts(at)
