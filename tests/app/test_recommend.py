"""Explore's "Recommended for this layout" and the Planner at each layout's best settings, through AppTest."""

from __future__ import annotations

from tests.support.apptest import heatmap_chart, metric_values, new_app, no_exception, on_page, scenario_charts, texts

# A cheap scenario with a cliff: 8B on a 24 GiB device, 160 reasoning requests (the knee is a few dozen sequences).
SMALL = {"v": "1", "gpu": "custom", "gpu_mem_gib": "24", "max_model_len": "32768", "num_requests": "160",
         "max_num_seqs": "160"}  # fmt: skip


def param(at, key: str) -> str | None:
    value = at.query_params.get(key)
    return value[0] if isinstance(value, list) else value


def test_the_recommendation_renders_and_apply_changes_the_link_and_the_charts() -> None:
    at = new_app(**SMALL)
    at.run()
    no_exception(at)
    assert "Recommended for this layout" in texts(at)
    assert not any(m.label.startswith("Recommended") for m in at.metric)  # not searched before it is asked for
    at.button(key="knee_find").click().run()
    no_exception(at)
    values = metric_values(at)
    recommended = int(values["Recommended max_num_seqs (predicted)"].replace(",", ""))
    assert recommended != 160
    shown = texts(at)
    assert "predictions in" in shown and "calibration: defaults" in shown and "predicted by the engine" in shown
    kv_before = scenario_charts(at)[0]["data"][0]["y"]
    completion_before = values["Completion time (predicted)"]
    assert param(at, "max_num_seqs") == "160"

    at.button(key="knee_apply").click().run()
    no_exception(at)
    assert param(at, "max_num_seqs") == str(recommended)  # the link
    assert at.select_slider(key="ctl_explore_max_num_seqs").value == recommended  # the control
    assert scenario_charts(at)[0]["data"][0]["y"] != kv_before  # the charts
    assert metric_values(at)["Completion time (predicted)"] != completion_before
    assert "already uses the recommended setting" in texts(at)


def test_the_cliff_map_marks_the_knee_once_recommended() -> None:
    at = new_app(**SMALL, tab="Cliff map", map_y="num_requests")
    at.run()
    at.button(key="knee_find").click().run()
    no_exception(at)
    knee = int(metric_values(at)["Recommended max_num_seqs (predicted)"].replace(",", ""))
    spec = heatmap_chart(at)
    stars = [t for t in spec["data"] if t.get("name", "").startswith("predicted knee")]
    assert len(stars) == 1 and stars[0]["x"] == [str(knee)]
    assert str(knee) in spec["data"][0]["x"]  # the knee's column is on the map


def test_no_preemption_limit_recommends_below_the_cliff() -> None:
    at = new_app(**SMALL)
    at.run()
    at.button(key="knee_find").click().run()
    free = int(metric_values(at)["Recommended max_num_seqs (predicted)"].replace(",", ""))
    at.selectbox(key="ctl_explore_knee_limit").set_value("no-preemption").run()
    no_exception(at)
    values = metric_values(at)
    assert int(values["Recommended max_num_seqs (predicted)"].replace(",", "")) < free
    assert values["Preemptions there (predicted)"] == "0"
    assert "cliff limit (no preemption)" in texts(at)


def test_planner_ranks_each_layout_at_its_knee_with_slo_inputs() -> None:
    at = on_page("planner", **{**SMALL, "gpus": "2", "tune": "1"})
    no_exception(at)
    assert at.toggle(key="ctl_planner_tune").value is True
    assert "Best predicted layout at its own knee" in texts(at)
    table = at.dataframe[0].value
    assert table.shape[0] >= 2 and "recommended max_num_seqs" in table.columns
    assert all("max_num_seqs=" in link for link in table["explore"])
    assert "predictions" in texts(at) and "calibration: defaults" in texts(at)
    at.selectbox(key="ctl_planner_cliff").set_value("no-preemption").run()
    no_exception(at)
    assert param(at, "cliff") == "no-preemption" and param(at, "tune") == "1"
    assert all(n == 0 for n in at.dataframe[0].value["preemptions there"])
    at.number_input(key="ctl_planner_slo_tpot").set_value(1.0).run()  # 1 ms: nothing meets it
    no_exception(at)
    assert param(at, "slo") == "tpot=1ms"
    assert "Layouts without a recommendation" in texts(at)


def test_completion_change_never_calls_a_slower_knee_faster() -> None:
    from pages.ui.recommend import _completion_change

    assert _completion_change(604.0, 605.0) == "0.2% slower than yours"
    assert _completion_change(500.0, 468.0) == "6.8% faster than yours"
    assert _completion_change(600.0, 600.1) == "as fast as yours"
    assert _completion_change(None, 600.0) is None
