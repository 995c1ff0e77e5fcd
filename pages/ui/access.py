"""Who may change the store: when an upload secret is configured, only its holders upload and delete.

The secret comes from ``$CLIFFSCOPE_UPLOAD_SECRET`` or ``upload_secret`` in ``.streamlit/secrets.toml``. Everyone
still views and shares links. Unset (the default for a local ``make run``): anyone using this dashboard may upload.
"""

from __future__ import annotations

import hmac
import os

import streamlit as st

ENV = "CLIFFSCOPE_UPLOAD_SECRET"
_UNLOCKED = "_cs_upload_unlocked"


def configured_secret() -> str | None:
    value = os.environ.get(ENV)
    if value:
        return value
    try:
        secret = st.secrets.get("upload_secret")
    except (FileNotFoundError, KeyError, AttributeError):  # no secrets.toml: nothing configured
        return None
    except Exception:  # a malformed secrets.toml must not take the page down
        return None
    return str(secret) if secret else None


def may_write() -> bool:
    """True when no secret is configured or this session gave the right one."""
    secret = configured_secret()
    return secret is None or bool(st.session_state.get(_UNLOCKED))


def unlock_form(key: str) -> bool:
    """Ask for the upload secret when one is configured; returns whether this session may write."""
    if may_write():
        return True
    st.info("This deployment restricts uploads and deletions to holders of its upload secret. Viewing and sharing "
            "links need none.", icon=":material/lock:")  # fmt: skip
    with st.form(key=f"unlock_{key}", border=False):
        given = st.text_input("Upload secret", type="password", key=f"secret_{key}")
        submitted = st.form_submit_button("Unlock")
    if not submitted:
        return False
    secret = configured_secret() or ""
    if given and hmac.compare_digest(given.encode(), secret.encode()):
        st.session_state[_UNLOCKED] = True
        st.success("Unlocked for this session.", icon=":material/lock_open:")
        return True
    st.error("That is not the upload secret of this deployment.")
    return False
