"""AppTest fixtures: the real app script over a real DuckDB file holding two stored runs.

Streamlit caches the store per process (st.cache_resource), so every AppTest in this session shares one database;
``CLIFFSCOPE_DB`` points it at a temporary file before the first test opens it.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.store import Store
from tests.integration.store_support import DASHBOARD_RUN_META, make_bundle

REPO = Path(__file__).resolve().parents[2]
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


@pytest.fixture(scope="session", autouse=True)
def app_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("apptest")
    db = root / "cliffscope.duckdb"
    bundles = root / "bundles"
    make_bundle(bundles, MATCHING_RUN, name="apptest matching run", **RUN_META)
    make_bundle(bundles, OTHER_RUN, name="apptest other run", **{**RUN_META, "max_num_seqs": 32})
    with Store(db) as store:
        for bundle in sorted(bundles.iterdir()):
            store.ingest(bundle)
    previous = os.environ.get("CLIFFSCOPE_DB")
    os.environ["CLIFFSCOPE_DB"] = str(db)
    yield db
    if previous is None:
        os.environ.pop("CLIFFSCOPE_DB", None)
    else:
        os.environ["CLIFFSCOPE_DB"] = previous


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
