"""Streamlit 1.67's spurious "Page not found" on a fresh server, seen in Chromium (why: pages/ui/startup.py).

An app laid out like ours (app.py routing with st.navigation, a pages/ folder of packages beside it) but without the
workaround shows the dialog on a fresh server's first request when that request is a deep link, and never again.
The day this fails Streamlit has fixed it: take the workaround out of app.py and pages/ui/startup.py. The real
dashboard's deep links are held to no dialog by test_dashboard_browser.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dashboard import VIEWPORT, chromium, chromium_available, streamlit_server, wait_idle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="Debian's chromium (/usr/bin/chromium) or playwright missing"),
]

ROUTER = """import streamlit as st

explore = st.Page("pages/views/explore.py", title="Explore", url_path="explore", default=True)
page = st.navigation([explore, st.Page("pages/views/runs.py", title="Runs", url_path="runs")])
page.run()
"""


def _layout_like_ours(root: Path) -> Path:
    for package in ("pages", "pages/ui", "pages/views"):
        (root / package).mkdir(parents=True, exist_ok=True)
    (root / "pages" / "__init__.py").write_text("")
    (root / "pages" / "ui" / "__init__.py").write_text("")
    for name in ("explore", "runs"):
        (root / "pages" / "views" / f"{name}.py").write_text(f"import streamlit as st\n\nst.title('{name} page')\n")
    (root / "app.py").write_text(ROUTER)
    return root


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as b:
        yield b


def _dialog_while_loading(browser, url: str) -> tuple[bool, str]:
    """Whether a "Page not found" dialog shows while the page loads (it stays until closed), and the page's title."""
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url)
    wait_idle(page)
    page.get_by_role("heading", name="runs page").wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    shown = page.locator("[role='dialog']", has_text="Page not found").count() > 0
    title = page.locator("h1").first.inner_text()
    page.close()
    return shown, title


def test_a_deep_link_on_a_fresh_server_gets_a_spurious_page_not_found_once(tmp_path: Path, browser) -> None:
    app = _layout_like_ours(tmp_path / "app")
    with streamlit_server(app, "app.py", timeout_s=120) as base:
        assert _dialog_while_loading(browser, f"{base}/runs") == (True, "runs page")  # routed, yet the dialog
        assert _dialog_while_loading(browser, f"{base}/runs") == (False, "runs page")  # later runs: fine
