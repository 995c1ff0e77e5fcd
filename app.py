"""cliffscope dashboard entry point: a router over pages/views (see ../shared/reference/stack.md on why)."""

import streamlit as st

st.set_page_config(page_title="cliffscope", layout="wide")
page = st.navigation([st.Page("pages/views/explore.py", title="Explore", url_path="explore", default=True)])
page.run()
