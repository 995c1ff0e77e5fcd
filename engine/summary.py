"""The keys of a run's summary: one contract for the engine's predicted and the store's measured summaries.

Both sides key their summaries exactly like this, so the dashboard and the fidelity report compare them field by field.
"""

SUMMARY_KEYS = (
    "completion_s",
    "cliff_onset_s",
    "preemptions",
    "peak_running",
    "peak_kv_usage",
    "kv_capacity_tokens",
    "ttft_mean_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_mean_s",
    "tpot_p50_s",
    "tpot_p99_s",
    "e2e_mean_s",
    "e2e_p50_s",
    "e2e_p99_s",
    "queue_mean_s",
    "num_requests",
    "generated_tokens",
    "generation_tokens_per_s",
    "bound_regime",
)
