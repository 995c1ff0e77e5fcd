"""A Streamlit quirk on a freshly started server, handled in one place.

A ``pages/`` directory beside app.py (our package of page scripts) puts Streamlit into its old page-discovery mode
until ``st.navigation`` runs for the first time. On the very first script run after the server starts, a deep link
(e.g. ``/runs``) is therefore looked up among the discovered pages only, and the browser is sent a "Page not found"
dialog — although app.py then routes to the right page and draws it. Later runs are not affected. We detect that
first run and close that one spurious dialog in the browser; nothing else is touched.
"""

from __future__ import annotations

import contextlib

import streamlit as st

_CLOSE_DIALOG_JS = """
<script>
(() => {
  const started = Date.now();
  const tick = () => {
    const dialog = [...document.querySelectorAll('[role="dialog"]')]
      .find((d) => d.textContent.includes('Page not found'));
    if (dialog) {
      const close = dialog.querySelector('button[aria-label="Close"]') || dialog.querySelector('button');
      if (close) { close.click(); return; }
    }
    if (Date.now() - started < 8000) setTimeout(tick, 50);
  };
  tick();
})();
</script>
"""


def first_run_in_pages_dir_mode() -> bool:
    """True only during the first script run of a fresh server (before st.navigation switched discovery off)."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without this internal: nothing to work around
        return False
    return bool(getattr(PagesManager, "uses_pages_directory", False))


def dismiss_spurious_page_not_found() -> None:
    with st.sidebar:
        st.html(_CLOSE_DIALOG_JS, unsafe_allow_javascript=True, width="content")


def warm_up() -> None:
    """Server start-up work (serve.py): import what the pages use, open the store (a new database imports the
    bundled runs), predict the default scenario and prepare the landing page's measured-cliff panel, so the first
    visitor is served like every later one. Failures are left for the page that needs them to report.

    This runs outside any script run: the st.cache'd functions it fills must not have a spinner of their own (a
    spinner with no page to draw on makes Streamlit log "missing ScriptRunContext"); the pages show theirs."""
    import pages.ui.cliffmap
    import pages.ui.compare
    import pages.ui.controls
    import pages.ui.measured_cliff
    import pages.ui.predictions
    import pages.ui.timelines  # the others: for their import cost
    from engine.scenario import Scenario
    from engine.simulate import predict
    from pages.ui import data

    opening = data.start_opening_store()
    data.start_inbox_watcher()
    with contextlib.suppress(Exception):
        predict(Scenario())  # the landing page's scenario: the engine keeps it in its own cache
    with contextlib.suppress(Exception):
        store = opening.result()
        found = pages.ui.measured_cliff.nearest_measured_cliff(store, Scenario())  # the landing page's panel
        if found is not None:
            pages.ui.measured_cliff.evidence(store, pages.ui.compare.run_key(found.meta), found.run_id)
