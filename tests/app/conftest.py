"""AppTest fixtures: the real app script over a real DuckDB file holding two stored runs.

Streamlit caches the store per process (st.cache_resource), so every AppTest in this session shares one database;
``CLIFFSCOPE_DB`` points it at a temporary file before the first test opens it. The helpers that drive the app are in
tests/support/apptest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.store import Store
from tests.support.apptest import MATCHING_RUN, OTHER_RUN, RUN_META
from tests.support.run_bundles import make_bundle


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
