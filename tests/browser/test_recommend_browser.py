"""Explore's "Recommended for this layout" in a real Chromium: it renders on request, and "apply" rewrites the link
and redraws the charts; a screenshot of the panel goes to .artifacts/screenshots/explore-recommended.png."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import pytest

from tests.support.dashboard import (
    SCENARIO_KV_Y,
    VIEWPORT,
    chromium,
    chromium_available,
    dashboard_server,
    screenshot,
    wait_idle,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="Debian's chromium (/usr/bin/chromium) or playwright missing"),
]

# 8B on a 24 GiB device, 160 reasoning requests: a cliff within a few dozen sequences, cheap to search.
QUERY = "v=1&gpu=custom&gpu_mem_gib=24&max_model_len=32768&num_requests=160&max_num_seqs=160"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with dashboard_server(tmp_path_factory.mktemp("browser-knee") / "cliffscope.duckdb") as base:
        yield base


def test_recommendation_renders_and_apply_changes_link_and_charts(server: str) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{server}/explore?{QUERY}")
        page.wait_for_function(f"() => !!({SCENARIO_KV_Y})()", timeout=120_000)
        wait_idle(page, 120_000)
        page.get_by_role("button", name="Find the recommended max_num_seqs").click()
        panel = page.locator(".st-key-knee_panel")
        panel.get_by_text("Recommended max_num_seqs (predicted)").wait_for(timeout=120_000)
        wait_idle(page, 120_000)
        assert page.locator("[data-testid='stException']").count() == 0
        assert "calibration: defaults" in panel.inner_text()
        apply = panel.get_by_role("button", name="Apply max_num_seqs")
        recommended = apply.inner_text().split("max_num_seqs")[-1].strip().replace(",", "")
        assert recommended.isdigit() and recommended != "160"
        before = page.evaluate(SCENARIO_KV_Y)
        page.set_viewport_size({"width": 1280, "height": 1600})
        wait_idle(page)
        page.wait_for_timeout(800)
        screenshot(page, "explore-recommended")
        page.set_viewport_size(VIEWPORT)
        apply.click()
        page.wait_for_function(
            "(m) => new URLSearchParams(location.search).get('max_num_seqs') === m", arg=recommended, timeout=120_000
        )
        page.wait_for_function(f"(b) => {{ const now = ({SCENARIO_KV_Y})(); return now && now !== b; }}",
                               arg=before, timeout=120_000)  # fmt: skip
        wait_idle(page, 120_000)
        assert parse_qs(urlparse(page.url).query)["max_num_seqs"] == [recommended]
        panel.get_by_text("already uses the recommended setting").wait_for(timeout=60_000)
        page.set_viewport_size({"width": 1280, "height": 1600})
        page.wait_for_timeout(800)
        screenshot(page, "explore-recommended-applied")
        page.close()
