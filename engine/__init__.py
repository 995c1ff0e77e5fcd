"""cliffscope's UI-free core: the analytical model of vLLM serving and the telemetry store. No Streamlit here."""
