"""A published record through the Upload page, then labelled `published` with its source link on Runs and Fidelity.

Runs in this module's order after the other page tests (the session shares one database), so the record it adds
does not change what those tests count.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.apptest import no_exception, on_page, texts

REPO = Path(__file__).resolve().parents[2]
RECORD = REPO / "data" / "published" / "paper" / "paper-v-b-32b-dp4-tp2.toml"
URL = "https://arxiv.org/abs/2605.19775"


def test_a_published_record_is_uploaded_and_listed_with_its_source() -> None:
    at = on_page("upload")
    at.file_uploader(key="upload_file").set_value((RECORD.name, RECORD.read_bytes(), "application/toml")).run()
    no_exception(at)
    page = texts(at)
    assert "passed every check" in page and URL in page
    assert "gpu_memory_utilization" in page  # the flags the source leaves unstated are shown before ingest
    at.button(key="upload_ingest").click().run()
    no_exception(at)
    assert "paper-v-b-32b-dp4-tp2" in texts(at)

    runs = on_page("runs", f_source="published")
    no_exception(runs)
    table = next(d.value for d in runs.dataframe if "source_ref" in d.value.columns)
    assert set(table["source"]) == {"published"} and URL in set(table["source_ref"])
    published = next(d.value for d in runs.dataframe if "cited as" in d.value.columns)
    row = published.loc[published["run_id"] == "paper-v-b-32b-dp4-tp2"].iloc[0]
    assert row["source"] == "published" and row["link"] == URL and row["completion_s"] == 484
    assert row["layout"] == "DP4·TP2·PP1"

    fidelity = on_page("fidelity")
    no_exception(fidelity)
    listed = next(d.value for d in fidelity.dataframe if "cited as" in d.value.columns)
    assert "paper-v-b-32b-dp4-tp2" in set(listed["run_id"]) and set(listed["source"]) == {"published"}
