"""Readers for outside telemetry formats (vLLM bench JSON, Prometheus text/JSON, CSV/JSONL/Parquet, bundles)."""
