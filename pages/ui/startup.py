"""A Streamlit quirk on a freshly started server, handled in one place; why no supported way avoids it in 1.67.

The product's layout puts ``pages/`` (a package: ``pages/__init__.py``, ``pages/ui``, ``pages/views``) beside app.py.
Streamlit 1.67 decides from that folder's mere existence, once per process, that the app uses the legacy pages/
directory, and routes the first script run through that legacy mode before app.py's ``st.navigation`` can switch it
off. A deep link (e.g. ``/runs``) opened as a fresh server's first request therefore gets a "Page not found" dialog,
although app.py then routes to the right page and draws it. The code path (streamlit 1.67.0):

1. ``streamlit/runtime/pages_manager.py``, ``PagesManager.__init__`` (first ``AppSession``): while the class
   attribute ``PagesManager.uses_pages_directory`` is None, it becomes
   ``Path(main_script_parent / "pages").exists()`` — a folder of packages only, no ``pages/*.py`` page, or no
   ``__init__.py``, all count.
2. ``streamlit/runtime/scriptrunner/script_runner.py``, ``ScriptRunner._run_script``: while that flag is true it runs
   ``_mpa_v1(main_script_path)`` instead of app.py's code.
3. ``_mpa_v1`` (same file) builds the legacy page list — app.py plus ``pages/*.py`` except ``__init__.py``, i.e.
   app.py alone for us — and calls ``streamlit/commands/navigation.py``, ``_navigation``.
4. ``_navigation`` asks ``PagesManager.set_pages_and_resolve`` for the link's page name ("runs"), which
   ``_resolve_page_script`` finds in no page's ``url_pathname``, so it calls ``send_page_not_found(ctx)``: the dialog
   is queued to the browser, and the default page, app.py, runs.
5. app.py calls the public ``st.navigation`` (``commands/navigation.py``, ``navigation``), which sets
   ``PagesManager.uses_pages_directory = False`` for the whole process and routes the same run to the Runs page.
   Every later run, in every session, skips steps 2–4 — Streamlit documents this: "As soon as any session of your app
   executes the st.navigation command, your app will ignore the pages/ directory (across all sessions)"
   (https://docs.streamlit.io/develop/api-reference/navigation/st.navigation, checked 2026-12-02).

Nothing supported avoids it (each tried on a fresh server with a deep link in Chromium, 2026-12-02): no config option
or ``st.App`` argument names the pages folder or turns the legacy mode off; ``client.showSidebarNavigation = false``
only hides the legacy menu (the dialog still shows); ``st.navigation`` needs a script run, so it cannot run at server
start; a pages/ holding only packages (with or without ``__init__.py``) still triggers step 1. Renaming the folder
(Streamlit's own advice for st.navigation apps) removes the dialog but breaks the specified layout. One shim per URL
(``pages/runs.py`` running app.py) also removes it, but then ``st.navigation`` is called from a page, which the docs
forbid ("you must call it from your entrypoint file"), and every new page needs its shim. So we detect that first run
(the flag of step 1 is still true) and close that one spurious dialog in the browser; nothing else is touched.
tests/unit/test_streamlit_pages_mode.py and tests/browser/test_streamlit_pages_mode.py fail the day Streamlit changes
any step above, so the workaround can come off then.
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
