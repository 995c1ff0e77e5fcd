"""Readable failures: a page shows what went wrong and what to do, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

log = logging.getLogger("cliffscope.dashboard")


class PageDone(Exception):
    """Raised by a page that has nothing more to show (instead of st.stop, so the router still writes the URL)."""


def page_done() -> None:
    raise PageDone


def explain(exc: BaseException) -> str:
    """One line a user can act on: the exception's own message (our errors name field/file and fix)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


@contextmanager
def shown_as_message(what: str) -> Iterator[None]:
    """Run a block; if it fails, log the traceback for the operator and show the user one clear line instead."""
    try:
        yield
    except Exception as exc:  # Streamlit's rerun/stop are BaseExceptions and pass through
        log.exception("dashboard: %s failed", what)
        st.error(f"**Could not {what}.** {explain(exc)}", icon=":material/error:")
