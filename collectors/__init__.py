"""Run real vLLM jobs, sample engine and GPU telemetry while they run, and write run bundles."""
