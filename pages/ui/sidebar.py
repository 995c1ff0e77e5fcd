"""The sidebar every page shares: what this is, and a link that reopens exactly this view."""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from pages.ui import links


def header() -> DeltaGenerator:
    """Draw the shared part of the sidebar; returns the slot the share link is written into after the page ran."""
    with st.sidebar:
        st.caption("cliffscope · see the reasoning cliff of LLM serving before you hit it")
        slot = st.container(key="share_slot")
    return slot


def share_link(slot: DeltaGenerator, params: Mapping[str, str]) -> None:
    """The 'copy link' control: the full URL of this view, with a copy button (st.code has one)."""
    with slot, st.expander(":material/link: Copy link to this view", key="share_link", on_change="rerun") as box:
        if box.open:  # drawn only when opened: st.code's highlighter costs a first visit ~0.3 s of browser time
            st.code(links.share_url(params), language=None, wrap_lines=True)
            st.caption("Everything you set is in the link, including selected runs; old links still open.")
