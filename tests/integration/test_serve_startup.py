"""`streamlit run serve.py` (what `make run` starts): the start-up warm-up fills the landing page's caches before the
first request, and logs nothing while doing it (it runs outside any script run, so a cached function that draws a
spinner there would log "missing ScriptRunContext"). A real server on its own DuckDB file; no browser."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from tests.support.dashboard import ARTIFACTS, dashboard_server

WARMED = ("pages.ui.measured_cliff.nearest_measured_cliff", "pages.ui.measured_cliff.evidence")


def cache_misses(metrics: str, cache: str) -> int:
    """Lookups of one st.cache_data function that computed (Streamlit's /_stcore/metrics, OpenMetrics text)."""
    found = re.search(rf'cache_lookups_total{{cache="{re.escape(cache)}",[^}}]*result="miss"}} (\d+)', metrics)
    return int(found.group(1)) if found else 0


def test_serve_warms_the_landing_page_and_logs_no_warning(tmp_path: Path) -> None:
    with dashboard_server(tmp_path / "cliffscope.duckdb") as base:  # healthy only once the warm-up has finished
        with urllib.request.urlopen(f"{base}/_stcore/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        log = (ARTIFACTS / f"streamlit-{base.rsplit(':', 1)[1]}.log").read_text()
    assert "ScriptRunContext" not in log, log
    assert "Traceback" not in log, log
    for cache in WARMED:  # computed by the warm-up, before any visitor
        assert cache_misses(metrics, cache) == 1, f"{cache} was not warmed:\n{metrics}"
