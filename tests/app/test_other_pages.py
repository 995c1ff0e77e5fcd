"""Runs, Planner, Upload and Methods through AppTest, on the real store file of this session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.apptest import MATCHING_RUN, OTHER_RUN, bundle_zip, no_exception, on_page, texts
from tests.support.paths import TOOL_FILES


def chart_specs(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_runs_page_compares_runs_with_their_predictions() -> None:
    at = on_page("runs", runs=f"{MATCHING_RUN},{OTHER_RUN}")
    no_exception(at)
    assert at.multiselect(key="ctl_runs_runs").value == [MATCHING_RUN, OTHER_RUN]
    timelines = next(s for s in chart_specs(at) if s["layout"]["title"]["text"].startswith("Measured runs"))
    names = [t["name"] for t in timelines["data"] if t.get("yaxis", "y") == "y"]  # the first row: KV usage
    assert sum(n.startswith("measured") for n in names) == 2
    assert sum(n.startswith("predicted") for n in names) == 2
    assert all("KV usage error" in n and "% of the KV pool" in n for n in names if n.startswith("measured"))
    styles = [(t.get("yaxis", "y"), t["line"]["color"], t["line"]["dash"]) for t in timelines["data"]]
    assert len(set(styles)) == len(styles)  # no two lines of a row drawn alike
    cdf = next(s for s in chart_specs(at) if "per request" in s["layout"]["title"]["text"])
    assert cdf["layout"]["xaxis"]["title"]["text"] == "E2E latency (s)"
    at.radio(key="ctl_runs_metric").set_value("ttft_s").run()
    cdf = next(s for s in chart_specs(at) if "per request" in s["layout"]["title"]["text"])
    assert cdf["layout"]["xaxis"]["title"]["text"] == "TTFT (s)"
    assert len(at.get("download_button")) >= 4


def test_runs_page_filters_and_reports_unknown_runs() -> None:
    at = on_page("runs", f_model="DeepSeek-R1-Distill-Llama-8B", runs="no-such-run")
    no_exception(at)
    assert at.selectbox(key="ctl_runs_f_model").value == "DeepSeek-R1-Distill-Llama-8B"
    assert "no-such-run" in "\n".join(str(w.value) for w in at.warning)


def test_planner_ranks_layouts_and_links_to_explore() -> None:
    at = on_page("planner", v="1", gpus="2", num_requests="200")
    no_exception(at)
    page = texts(at)
    assert "Best predicted layout" in page
    ranking = at.dataframe[0].value
    assert ranking.shape[0] >= 2  # DP 2 × TP 1 and DP 1 × TP 2 (at least)
    links = list(ranking["explore"])
    assert all(link.startswith("/explore?") for link in links)
    assert any("dp=2" in link for link in links) and any("tp=2" in link for link in links)
    spec = chart_specs(at)[0]
    assert spec["layout"]["xaxis"]["title"]["text"] == "completion time (s)"
    at.number_input(key="ctl_planner_gpus").set_value(4).run()
    no_exception(at)
    assert at.dataframe[0].value.shape[0] > ranking.shape[0]


def test_planner_plans_the_papers_eight_gpus_on_first_open() -> None:
    at = on_page("planner")
    no_exception(at)
    assert at.number_input(key="ctl_planner_gpus").value == 8
    assert "Planning **8 GPUs**" in texts(at)
    assert at.dataframe[0].value.shape[0] >= 4  # DP, TP and PP splits of 8 GPUs
    at.number_input(key="ctl_planner_gpus").set_value(2).run()  # the user's budget is kept on later runs
    no_exception(at)
    assert at.number_input(key="ctl_planner_gpus").value == 2
    assert "Planning **8 GPUs**" not in texts(at)


def test_planner_keeps_a_linked_single_gpu() -> None:
    at = on_page("planner", v="1", gpus="1", num_requests="200")
    no_exception(at)
    assert at.number_input(key="ctl_planner_gpus").value == 1


def test_methods_page_renders() -> None:
    at = on_page("methods")
    no_exception(at)
    assert "Llama-3.1-405B" in texts(at)


def test_upload_of_a_good_file_ingests_it(tmp_path: Path) -> None:
    content = bundle_zip("apptest-upload-good", tmp_path)
    at = on_page("upload")
    no_exception(at)
    assert "Limit: 200 MB" in texts(at)
    at.file_uploader(key="upload_file").set_value(("good.zip", content, "application/zip")).run()
    no_exception(at)
    assert "passed every check" in texts(at)
    at.button(key="upload_ingest").click().run()
    no_exception(at)
    assert "apptest-upload-good" in texts(at)
    assert any("apptest-upload-good" in str(link.proto.page) + str(link.proto.label) for link in at.get("page_link"))


def test_upload_of_a_bad_file_names_the_problem_and_writes_nothing(tmp_path: Path) -> None:
    content = bundle_zip("apptest-upload-bad", tmp_path, max_num_seqs="many")
    at = on_page("upload")
    at.file_uploader(key="upload_file").set_value(("bad.zip", content, "application/zip")).run()
    assert not at.exception
    page = texts(at)
    assert "cannot be ingested" in page and "Nothing was written" in page
    assert "upload_ingest" not in [b.key for b in at.button]  # no ingest button for a rejected file
    assert at.dataframe, "the problems table is shown"


def test_upload_refuses_an_unknown_extension_with_a_message_and_reads_a_gzipped_scrape() -> None:
    import gzip

    at = on_page("upload")
    no_exception(at)
    examples = [str(x) for frame in at.dataframe if "example" in frame.value for x in frame.value["example"]]
    assert "metrics.prom" in examples and any("metrics.prom.gz" in x for x in examples)  # each format, an example
    at.file_uploader(key="upload_file").set_value(("report.xlsx", b"PK\x03\x04", "application/zip")).run()
    assert not at.exception
    assert any("'.xlsx' is not one cliffscope reads" in e.value and ".gz" in e.value for e in at.error)
    assert "upload_ingest" not in [b.key for b in at.button]
    scrape = TOOL_FILES / "vllm-0.32-cpu-metrics-scrapes.prom"
    content = gzip.compress(scrape.read_bytes())
    at.file_uploader(key="upload_file").set_value(("metrics.prom.gz", content, "application/gzip")).run()
    no_exception(at)
    assert "passed every check" in texts(at)


def test_upload_lists_every_format_and_previews_a_real_guidellm_report() -> None:
    from engine.formats.accepted import ACCEPTED_FORMATS

    at = on_page("upload")
    no_exception(at)
    table = next(frame.value for frame in at.dataframe if "example" in frame.value)
    assert list(table["format"]) == [f.name for f in ACCEPTED_FORMATS]
    assert all(table["example"]) and all(table["written by"]) and all(table["cannot supply (stored as unknown)"])
    report = TOOL_FILES / "guidellm-0.8-sweep.json.gz"
    at.file_uploader(key="upload_file").set_value((report.name, report.read_bytes(), "application/gzip")).run()
    no_exception(at)
    assert "4 run(s) passed every check" in texts(at)  # synchronous, throughput and two poisson rates


def test_upload_live_prometheus_form_names_what_is_wrong() -> None:
    at = on_page("upload")
    at.text_input(key="live_url").set_value("http://127.0.0.1:9")  # nothing listens on the discard port
    at.text_input(key="live_start").set_value("2026-12-02T12:00:00Z")
    at.text_input(key="live_end").set_value("2026-12-02T12:05:00Z")
    at.button[0].click().run()
    assert not at.exception
    assert any("Nothing fetched" in e.value and "cannot reach" in e.value for e in at.error)
    at.text_input(key="live_end").set_value("yesterday")
    at.button[0].click().run()
    assert any("'yesterday' is not a time" in e.value for e in at.error)


@pytest.fixture
def upload_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CLIFFSCOPE_UPLOAD_SECRET", "s3cret-for-tests")
    return "s3cret-for-tests"


def test_upload_secret_gates_uploads(upload_secret: str) -> None:
    at = on_page("upload")
    no_exception(at)
    assert not at.get("file_uploader")
    at.text_input(key="secret_upload").set_value("wrong")  # a form sends its values with the submit
    at.button[0].click().run()
    assert "not the upload secret" in texts(at)
    assert not at.get("file_uploader")
    at.text_input(key="secret_upload").set_value(upload_secret)
    at.button[0].click().run()
    no_exception(at)
    assert at.get("file_uploader")
