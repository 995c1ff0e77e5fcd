"""Shared UI for the dashboard pages: URL state, controls, cached data, Plotly figures."""
