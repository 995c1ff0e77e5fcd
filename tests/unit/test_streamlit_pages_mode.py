"""Streamlit's legacy pages/ mode, as pages/ui/startup.py relies on it (streamlit 1.67): these fail the day Streamlit
changes how a pages/ folder beside the entrypoint is detected or switched off, so the first-run workaround is revisited.

The dialog itself is seen in a real browser by tests/browser/test_streamlit_pages_mode.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

from pages.ui import startup
from tests.support.paths import REPO_ROOT

ROUTER = """import streamlit as st

page = st.navigation([st.Page("pages/views/runs.py", title="Runs", url_path="runs", default=True)])
page.run()
"""


def _app(root: Path, *, pages: bool, router: str = ROUTER) -> Path:
    """An entrypoint beside (or without) a pages/ folder laid out like ours: packages only, no pages/*.py page."""
    root.mkdir(parents=True)
    (root / "app.py").write_text(router)
    if pages:
        (root / "pages" / "views").mkdir(parents=True)
        (root / "pages" / "views" / "runs.py").write_text("import streamlit as st\n\nst.title('Runs page')\n")
    return root / "app.py"


def _legacy_mode_for(entrypoint: Path, monkeypatch: pytest.MonkeyPatch) -> bool:
    """What PagesManager.__init__ decides for a fresh process (the class attribute still None)."""
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)
    PagesManager(str(entrypoint))
    return bool(PagesManager.uses_pages_directory)


def test_a_pages_folder_of_packages_beside_the_entrypoint_switches_on_the_legacy_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _legacy_mode_for(REPO_ROOT / "app.py", monkeypatch)  # ours: pages/__init__.py, pages/ui, pages/views
    assert startup.first_run_in_pages_dir_mode()  # the workaround reads the same flag
    assert _legacy_mode_for(_app(tmp_path / "packages", pages=True), monkeypatch)  # no __init__.py, no page
    assert not _legacy_mode_for(_app(tmp_path / "bare", pages=False), monkeypatch)


def test_only_st_navigation_switches_it_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that never calls st.navigation leaves the legacy mode on; one that does turns it off for the process."""
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)  # restored after the test
    plain = AppTest.from_file(
        str(_app(tmp_path / "plain", pages=True, router="import streamlit as st\n\nst.write(1)\n"))
    )
    plain.run()  # AppTest, like a fresh server, starts each run with the flag unset
    assert not plain.exception and PagesManager.uses_pages_directory is True
    routed = AppTest.from_file(str(_app(tmp_path / "routed", pages=True)))
    routed.run()
    assert not routed.exception and [t.value for t in routed.title] == ["Runs page"]
    assert PagesManager.uses_pages_directory is False
    assert not startup.first_run_in_pages_dir_mode()
