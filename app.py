"""cliffscope dashboard entry point: a router over pages/views, the shared sidebar, and the URL as state.

Pages live one level down in pages/views/ because a script directly in pages/ would become a page of Streamlit's old
page discovery, run without this router when a fresh server's first request is its deep link (pages/ui/startup.py).
"""

import contextlib

import streamlit as st

from engine import window_jit
from pages.ui import data, links, sidebar, startup
from pages.ui.errors import PageDone, shown_as_message

first_run_in_pages_dir_mode = startup.first_run_in_pages_dir_mode()  # read before st.navigation resets it

st.set_page_config(page_title="cliffscope", page_icon=":material/show_chart:", layout="wide")
data.start_opening_store()  # on a fresh server this imports the bundled runs while the first page computes

EXPLORE = st.Page("pages/views/explore.py", title="Explore", icon=":material/show_chart:", url_path="explore")


def _home() -> None:
    """The bare address opens Explore, keeping the link's parameters, so every page has its own URL path."""
    st.switch_page(EXPLORE, query_params=links.current_url_params())


PAGES = [
    st.Page(_home, title="Home", url_path="home", default=True, visibility="hidden"),
    EXPLORE,
    st.Page("pages/views/runs.py", title="Runs", icon=":material/table_chart:", url_path="runs"),
    st.Page("pages/views/planner.py", title="Planner", icon=":material/account_tree:", url_path="planner"),
    st.Page("pages/views/upload.py", title="Upload", icon=":material/upload_file:", url_path="upload"),
    st.Page("pages/views/fidelity.py", title="Fidelity", icon=":material/rule:", url_path="fidelity"),
    st.Page("pages/views/methods.py", title="Methods", icon=":material/functions:", url_path="methods"),
]

page = st.navigation(PAGES, position="sidebar")
if first_run_in_pages_dir_mode:
    startup.dismiss_spurious_page_not_found()
links.set_page_name(page.url_path)
links.sync_from_url()
share_slot = sidebar.header()
links.show_notices()
with shown_as_message(f"show the {page.title} page"), contextlib.suppress(PageDone):
    page.run()  # PageDone: the page has said all it had to say
sidebar.share_link(share_slot, links.write_url())
window_jit.start_background_load(delay_s=10)  # the simulator's compiled loop for later pages, not the first
