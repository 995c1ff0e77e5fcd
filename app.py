"""cliffscope dashboard entry point: a router over pages/views, the shared sidebar, and the URL as state.

Pages live one level down in pages/views/ because a script directly in pages/ would switch on Streamlit's old page
discovery and run without this router on a deep link (see README, "Dashboard").
"""

import streamlit as st

from pages.ui import links, sidebar
from pages.ui.errors import shown_as_message

st.set_page_config(page_title="cliffscope", page_icon="📉", layout="wide")

PAGES = [
    st.Page("pages/views/explore.py", title="Explore", icon="📉", url_path="explore", default=True),
    st.Page("pages/views/runs.py", title="Runs", icon="📊", url_path="runs"),
    st.Page("pages/views/planner.py", title="Planner", icon="🧭", url_path="planner"),
    st.Page("pages/views/upload.py", title="Upload", icon="📤", url_path="upload"),
    st.Page("pages/views/methods.py", title="Methods", icon="📐", url_path="methods"),
]

page = st.navigation(PAGES, position="sidebar")
links.sync_from_url()
share_slot = sidebar.header()
links.show_notices()
with shown_as_message(f"show the {page.title} page"):
    page.run()
sidebar.share_link(share_slot, links.write_url())
