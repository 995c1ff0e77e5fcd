"""The dashboard in a real Chromium: a slider move redraws the chart and rewrites the URL, that URL reopens the same
view, every page opens straight from its link on a fresh server, and an uploaded run can be found.

One server per module (started fresh, so the first request is a deep link); screenshots of each page go to
.artifacts/screenshots/.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from engine.store import Store
from tests.support.dashboard import (
    SCENARIO_KV_Y,
    VIEWPORT,
    chromium,
    chromium_available,
    dashboard_server,
    screenshot,
    wait_idle,
)
from tests.support.run_bundles import DASHBOARD_RUN_META, make_bundle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="Debian's chromium (/usr/bin/chromium) or playwright missing"),
]

RUN_META = DASHBOARD_RUN_META
PAGES = {"runs": "Measured runs", "planner": "Plan a layout", "upload": "Upload a run", "methods": "Methods",
         "fidelity": "Fidelity: predicted vs measured", "explore": "Explore the reasoning cliff"}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("browser")
    db = root / "cliffscope.duckdb"
    make_bundle(root / "bundles", "browser-run-a", name="browser run a", **RUN_META)
    with Store(db) as store:
        store.ingest(root / "bundles" / "browser-run-a")
    with dashboard_server(db) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as b:
        yield b


def scenario_metrics(page) -> list[str]:
    """The scenario's own metric values, leaving out the knee recommendation's (pages/ui/recommend.py), which
    renders once its search has run: the page it was measured on may have drawn it and the fresh one not yet."""
    values = []
    for metric in page.locator("[data-testid='stMetric']").all():
        label = metric.locator("[data-testid='stMetricLabel']").inner_text()
        if "Recommended" not in label and " there " not in label:
            values.append(metric.locator("[data-testid='stMetricValue']").inner_text())
    return values


def metrics_settle_to(page, expected: list[str], timeout_s: float = 30.0) -> list[str]:
    """The page's scenario metrics once they equal `expected`, or as they stand after `timeout_s`. Streamlit draws
    the metric row element by element, so a read straight after the page goes idle can catch it one short (CI saw
    seven of eight on a loaded runner); polling tells "not drawn yet" from "drawn differently"."""
    deadline = time.monotonic() + timeout_s
    while (seen := scenario_metrics(page)) != expected and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    return seen


def open_page(browser, url: str):
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url)
    page.wait_for_timeout(300)
    wait_idle(page)
    return page


def full_screenshot(page, name: str) -> Path:
    """The whole page at 1280 px wide, once the visible tables (drawn on canvases) and charts have painted."""
    page.set_viewport_size({"width": 1280, "height": 2400})
    wait_idle(page)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stDataFrame\"]')]"
        "    .every(d => d.querySelector('canvas') || !d.checkVisibility())",  # one in a closed expander never paints
        timeout=30_000,
    )
    page.wait_for_timeout(1000)
    path = screenshot(page, name)
    page.set_viewport_size(VIEWPORT)
    return path


def page_not_found_shown(page) -> bool:
    return page.locator("[role='dialog']", has_text="Page not found").count() > 0


def test_deep_links_open_each_page_on_a_fresh_server(server: str, browser) -> None:
    # The module's server has served nothing yet: this first request is a deep link.
    for path, title in PAGES.items():
        page = open_page(browser, f"{server}/{path}")
        page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
        page.wait_for_timeout(500)
        assert not page_not_found_shown(page), path
        assert urlparse(page.url).path == f"/{path}"
        assert page.locator("[data-testid='stException']").count() == 0
        full_screenshot(page, path)
        page.close()
    for name, query in (("explore-memory", "v=1&gpus=4&dp=2&pp=2&tab=Memory+per+GPU"),
                        ("explore-cliff-map", "v=1&num_requests=500&tab=Cliff+map")):  # fmt: skip
        page = open_page(browser, f"{server}/explore?{query}")
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 1", timeout=300_000)
        wait_idle(page, 300_000)
        assert page.locator("[data-testid='stException']").count() == 0
        full_screenshot(page, name)
        page.close()


def kv_chart_signature(page) -> str:
    """The y-values of the scenario's predicted KV usage (the timelines' first row; not the measured-cliff panel's,
    which shows a stored run), as the browser holds them."""
    return page.evaluate(SCENARIO_KV_Y)


def slider_value(page, label: str) -> str:
    block = page.locator("[data-testid='stSlider']", has_text=label)
    return block.locator("input[type='range']").get_attribute("aria-valuetext") or ""


def test_slider_moves_chart_and_url_and_the_url_restores_the_view(server: str, browser) -> None:
    page = open_page(browser, f"{server}/explore")
    page.get_by_role("heading", name="Explore the reasoning cliff").wait_for()
    page.wait_for_function(f"() => !!({SCENARIO_KV_Y})()", timeout=60_000)
    before = kv_chart_signature(page)
    assert before
    thumb = page.locator("[data-testid='stSlider']", has_text="max_num_seqs").locator("input[type='range']")
    thumb.focus()
    thumb.press("ArrowLeft")
    page.wait_for_function("() => location.search.includes('max_num_seqs=')", timeout=60_000)
    page.wait_for_timeout(300)
    wait_idle(page)
    page.wait_for_function(f"(before) => {{ const now = ({SCENARIO_KV_Y})(); return now && now !== before; }}",
                           arg=before, timeout=60_000)  # fmt: skip
    moved = parse_qs(urlparse(page.url).query)["max_num_seqs"][0]
    assert moved != "1024"
    metrics_then = scenario_metrics(page)
    shared = page.url
    page.get_by_text("Copy link to this view").click()
    link_text = page.locator("[data-testid='stSidebar'] [data-testid='stCode']").inner_text()
    assert link_text.strip().startswith(f"{server}/explore?") and f"max_num_seqs={moved}" in link_text
    full_screenshot(page, "explore-after-slider")
    thumb.focus()
    thumb.press("ArrowLeft")  # one more move, then the browser's back button restores the previous view
    page.wait_for_function(
        "(m) => new URLSearchParams(location.search).get('max_num_seqs') !== m", arg=moved, timeout=60_000
    )
    page.wait_for_timeout(300)
    wait_idle(page)
    page.go_back()
    page.wait_for_function(
        "(m) => new URLSearchParams(location.search).get('max_num_seqs') === m", arg=moved, timeout=60_000
    )
    page.wait_for_timeout(500)
    wait_idle(page)
    assert slider_value(page, "max_num_seqs") == moved
    page.close()

    fresh = browser.new_context(viewport=VIEWPORT).new_page()
    fresh.goto(shared)
    fresh.wait_for_timeout(300)
    wait_idle(fresh)
    fresh.wait_for_function(f"() => !!({SCENARIO_KV_Y})()", timeout=60_000)
    assert slider_value(fresh, "max_num_seqs") in (moved, str(moved))
    assert metrics_settle_to(fresh, metrics_then) == metrics_then
    assert kv_chart_signature(fresh) != before
    fresh.close()


def test_a_tampered_link_shows_the_notice(server: str, browser) -> None:
    page = open_page(browser, f"{server}/explore?v=1&model=nope&max_num_seqs=-3")
    notice = page.get_by_text("This link had values cliffscope could not use")
    notice.wait_for(timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0
    assert "max_num_seqs" not in parse_qs(urlparse(page.url).query)
    page.close()


def test_upload_a_file_and_find_its_run(server: str, browser, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "browser-upload-1", name="uploaded in chromium", **RUN_META)
    archive = tmp_path / "browser-upload-1.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for file in sorted(bundle.iterdir()):
            zf.write(file, arcname=f"browser-upload-1/{file.name}")
    archive.write_bytes(buf.getvalue())

    bad_dir = make_bundle(tmp_path / "bad", "browser-upload-bad", name="bad", **{**RUN_META, "max_num_seqs": "many"})
    bad = tmp_path / "browser-upload-bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for file in sorted(bad_dir.iterdir()):
            zf.write(file, arcname=f"browser-upload-bad/{file.name}")

    page = open_page(browser, f"{server}/upload")
    uploader = page.locator("[data-testid='stFileUploader'] input[type='file']")
    uploader.set_input_files(str(bad))
    page.get_by_text("cannot be ingested").wait_for(timeout=60_000)
    assert page.get_by_role("button", name="Ingest into the run database").count() == 0
    full_screenshot(page, "upload-rejected")
    uploader.set_input_files(str(archive))
    page.get_by_text("passed every check").wait_for(timeout=60_000)
    full_screenshot(page, "upload-validated")
    page.get_by_role("button", name="Ingest into the run database").click()
    link = page.get_by_role("link", name=re.compile("Open run browser-upload-1"))
    link.wait_for(timeout=60_000)
    link.click()
    page.wait_for_function("() => location.pathname === '/runs'", timeout=60_000)
    page.wait_for_timeout(300)
    wait_idle(page)
    page.get_by_role("heading", name="Measured runs").wait_for()
    assert "browser-upload-1" in parse_qs(urlparse(page.url).query).get("runs", [""])[0]
    # The heading is drawn before the run picker, and right after a page switch the app can still read as idle from
    # the previous page's run: wait for the picker's chip rather than count it at once.
    page.locator("[data-testid='stMultiSelect']").get_by_text("uploaded in chromium").first.wait_for(timeout=60_000)
    full_screenshot(page, "runs-after-upload")
    page.close()


def test_planner_opens_a_layout_in_explore(server: str, browser) -> None:
    page = open_page(browser, f"{server}/planner?v=1&gpus=2&num_requests=200")
    link = page.get_by_role("link", name=re.compile("Open the best layout"))
    link.wait_for(timeout=120_000)
    full_screenshot(page, "planner-2-gpus")
    layout = re.search(r"DP (\d) × TP (\d) × PP (\d)", link.inner_text())
    assert layout
    link.click()
    page.wait_for_function("() => location.pathname === '/explore'", timeout=60_000)
    page.wait_for_timeout(300)
    wait_idle(page)
    query = parse_qs(urlparse(page.url).query)
    assert query.get("gpus") == ["2"]
    page.get_by_text(f"({layout.group(0)})").wait_for(timeout=60_000)  # the scenario line under the title
    full_screenshot(page, "explore-from-planner")
    page.close()
