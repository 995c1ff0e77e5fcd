"""Explore: the workload that drives every prediction (first page until the engine lands)."""

import plotly.express as px
import streamlit as st

from engine.workload import request_lengths

st.title("cliffscope")
st.caption("The reasoning profile of the paper (§III-B), drawn by engine.workload — computed, not measured.")
lengths = request_lengths("reasoning", 2000, seed=0)
fig = px.histogram(x=lengths[:, 1], nbins=60, labels={"x": "output tokens per request (computed)"})
st.plotly_chart(fig, width="stretch")
