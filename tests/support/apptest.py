"""Drive the real app script with Streamlit's AppTest and read what a user would see: the stored runs the app tests
compare against, link params, page navigation, the texts and charts on a page.

The runs themselves are written into a real DuckDB file by the ``app_database`` fixture of tests/app/conftest.py.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.support.paths import REPO_ROOT
from tests.support.run_bundles import DASHBOARD_RUN_META, make_bundle

REPO = REPO_ROOT
TIMEOUT_S = 180

# Stored runs the tests compare against: one at the scenario below (so Explore overlays it), one beside it.
RUN_META = DASHBOARD_RUN_META
MATCHING_RUN = "apptest-run-a"
OTHER_RUN = "apptest-run-b"
# The scenario of MATCHING_RUN as link params.
MATCHING_PARAMS = {
    "v": "1",
    "gpu": "H100",
    "max_num_seqs": "64",
    "max_num_batched_tokens": "2048",
    "max_model_len": "4096",
    "num_requests": "32",
    "workload": "fixed:64,512",
}


def bundle_zip(run_id: str, root: Path, **meta: object) -> bytes:
    """A run bundle as the .zip a user uploads."""
    directory = make_bundle(root, run_id, name=f"uploaded {run_id}", **{**RUN_META, **meta})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for file in sorted(directory.iterdir()):
            zf.write(file, arcname=f"{run_id}/{file.name}")
    return buf.getvalue()


def new_app(**params: str) -> AppTest:
    """The app with a link's query params, not yet run."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT_S)
    for key, value in params.items():
        at.query_params[key] = value
    return at


def on_page(page: str, **params: str) -> AppTest:
    """Run the app once (the router registers the pages), then open ``page`` (e.g. 'runs') with params."""
    at = new_app(**params)
    at.run()
    at.switch_page(f"pages/views/{page}.py")
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    return at


def texts(at: AppTest) -> str:
    """Every markdown, caption, alert and title text on the page, for assertions on what a user reads."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "warning", "info", "error", "success"):
        parts.extend(str(el.value) for el in at.get(kind))
    return "\n".join(parts)


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    errors = [str(e.value) for e in at.error]
    assert not errors, errors


def metric_values(at) -> dict[str, str]:
    return {m.label: str(m.value) for m in at.metric}


def chart_specs(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def scenario_charts(at) -> list[dict]:
    """The timelines of the scenario itself (not the measured-cliff panel's run)."""
    return [s for s in chart_specs(at) if any("this scenario" in t["name"] for t in s["data"])]


def row_titles(spec: dict) -> list[str]:
    """The row titles of a stacked timelines figure (bold annotations above each row)."""
    return [a["text"].removeprefix("<b>").removesuffix("</b>") for a in spec["layout"]["annotations"]
            if a["text"].startswith("<b>")]  # fmt: skip


def kv_row(spec: dict) -> list[dict]:
    """The traces of the timelines' first row (KV usage)."""
    return [t for t in spec["data"] if t.get("yaxis", "y") == "y"]


def heatmap_chart(at) -> dict:
    return next(s for s in chart_specs(at) if s["data"] and s["data"][0]["type"] == "heatmap")


def measured_cliff_charts(at) -> list[dict]:
    return [s for s in chart_specs(at) if any(t["name"].startswith("measured") for t in s["data"])
            and not any("this scenario" in t["name"] for t in s["data"])]  # fmt: skip
