"""`streamlit run serve.py`: the dashboard (app.py) with its start-up work done before the first visitor arrives.

Streamlit runs app.py only when a browser connects, so on a plain `streamlit run app.py` the first visitor waits for
what every later one gets for free: importing the engine and the pages, the first-start import of the bundled runs
into a new database, and the default scenario's prediction. ``st.App``'s lifespan hook runs that once at server
start (pages/ui/startup.py), before the server answers its first request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import streamlit as st


@asynccontextmanager
async def warmed_up(_app: st.App) -> AsyncIterator[None]:
    from pages.ui.startup import warm_up

    await asyncio.to_thread(warm_up)
    yield


app = st.App("app.py", lifespan=warmed_up)
