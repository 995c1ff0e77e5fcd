"""The Fidelity page through AppTest on this session's real store file (two stored GPU runs)."""

from __future__ import annotations

import json

from tests.support.apptest import MATCHING_RUN, no_exception, on_page, texts


def test_fidelity_page_scores_the_stored_runs_and_links_their_overlay() -> None:
    at = on_page("fidelity", fig="tpot_mean_s")
    no_exception(at)
    page = texts(at)
    assert "Fidelity: predicted vs measured" in page
    assert "held-out runs" in page
    assert at.selectbox(key="ctl_fidelity_fig").value == "tpot_mean_s"
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [s["layout"]["title"]["text"] for s in specs]
    assert any(t.startswith("mean TPOT (s/token): predicted vs measured") for t in titles)
    assert any(t.startswith("Residuals by regime") for t in titles)
    scatter = next(s for s in specs if "predicted vs measured" in s["layout"]["title"]["text"])
    for axis in ("xaxis", "yaxis"):  # log axes labelled in full (1-2-5 per decade), not Plotly's bare '2' and '5'
        layout = scatter["layout"][axis]
        assert layout["type"] == "log"
        assert layout["ticktext"] == [f"{v:g}" for v in layout["tickvals"]] and len(layout["tickvals"]) >= 2
    runs = next(d.value for d in at.dataframe if "overlay" in d.value.columns)
    assert len(runs) == 2
    assert any(MATCHING_RUN in link for link in list(runs["overlay"]))
    assert all(link.startswith("/runs?runs=") for link in list(runs["overlay"]))
    metrics = {m.label: m.value for m in at.metric}
    assert "kv capacity err max" in metrics and "e2e mape" in metrics


def test_fidelity_page_shows_the_published_section_beside_the_measured_runs() -> None:
    from engine.fidelity.published_fit import records_digest, records_of, shipped_report

    at = on_page("fidelity")
    no_exception(at)
    page = texts(at)
    assert "Published runs: public GPU figures, held out" in page
    records, _ = records_of(None)
    if shipped_report(records_digest(records)) is None:  # records changed since the report was exported
        assert any(b.key == "fid_pub_compute" for b in at.button)
        return
    paper = next(d.value for d in at.dataframe if "published (s)" in d.value.columns)
    assert set(paper["case"]) == {"14B", "32B", "405B", "R1"}
    assert "best layout" in page and "NOT a reasoning model" in page
    mmw = [d.value for d in at.dataframe if "median |err|" in d.value.columns]
    assert any("paper cases" in list(frame["held out"]) for frame in mmw)
    # Each held-out fold's fitted parameters beside the datasheet figure, ceilings flagged.
    folds = next(d.value for d in at.dataframe if "datasheet figure" in d.value.columns)
    assert set(folds["held out"]) == {"source", "degree"}
    assert list(folds.columns)[:3] == ["held out", "device", "parameter"] and list(folds.columns)[-1] == "fit"
    assert {"H100", "A100-80GB"} <= set(folds["device"])  # two-stage device fits, beside the pooled-only ones
    efficiencies = folds[folds["parameter"] == "mem_efficiency"]
    assert (efficiencies["datasheet figure"] == "hbm_bytes_per_s").all() and (efficiencies["value"] <= 1).all()
    assert (efficiencies["unit"] == "GB/s").all() and set(efficiencies["datasheet"]) >= {2039.0, 3350.0}  # A100, H100
    assert "at bound" in folds.columns  # a device refit pinned at a bound is not shipped (fit_on_pooled): none now
    assert "upper" not in set(folds[folds["held out"] == "source"]["at bound"])
    bench = next(d.value for d in at.dataframe if "duration err" in d.value.columns)
    assert len(bench) > 100
    # A derived mean TPOT is labelled as such, and TPOT is also scored on the records that print it.
    derived = bench[bench["TPOT derived"] != ""]
    assert len(derived) > 0 and all("mean E2EL" in text for text in derived["TPOT derived"])
    assert any("bench records that print TPOT" in list(frame["held out"]) for frame in mmw)
