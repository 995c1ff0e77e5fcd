"""Checks of a run landed from a GuideLLM report against the report's own figures (the committed fixtures in
tests/unit/test_tool_fixtures.py, a live ``guidellm run`` in tests/integration/test_guidellm_live.py)."""

from __future__ import annotations

import statistics

import pytest

from engine.store import Store


def _successful(metrics: dict, name: str) -> dict:
    return metrics[name]["successful"]


def check_against_guidellm(store: Store, run_id: str, bench: dict, tpot_over_itl: float = 1.03) -> None:
    """One benchmark's run against GuideLLM's own summary of the same requests (16 output tokens asked for, as
    tests/support/make_tool_fixtures.py asks). ``tpot_over_itl``: how far above GuideLLM's ITL cliffscope's TPOT may
    be (0.3-2.5 % on the committed reports; the stream's closing chunks come later on a busier host)."""
    metrics, requests = bench["metrics"], bench["requests"]["successful"]
    rows = store.requests(run_id)
    assert rows.height == len(requests) == metrics["request_totals"]["successful"] > 0
    summary = store.measured_summary(run_id)
    assert summary["num_requests"] == metrics["request_totals"]["successful"]
    # the same requests' means are the same numbers (GuideLLM's medians interpolate differently: kept apart)
    assert summary["ttft_mean_s"] == pytest.approx(_successful(metrics, "time_to_first_token_ms")["mean"] / 1e3)
    assert summary["e2e_mean_s"] == pytest.approx(_successful(metrics, "request_latency")["mean"])
    timings = [(r["info"]["timings"], r["output_tokens"]) for r in requests]
    span = max(t["request_end"] for t, _ in timings) - min(t["request_start"] for t, _ in timings)
    assert summary["completion_s"] == pytest.approx(span)
    # GuideLLM's window ends at the end of the request its scheduler finalised last: in a throughput burst another
    # can end a few ms later (9.6 ms, 1.1 %, on the sweep's throughput benchmark; equal on the other six)
    assert bench["duration"] <= summary["completion_s"] == pytest.approx(bench["duration"], rel=0.02)
    assert summary["generated_tokens"] == _successful(metrics, "output_token_count")["total_sum"]
    output_rate = _successful(metrics, "output_tokens_per_second")["mean"]
    assert summary["generation_tokens_per_s"] == pytest.approx(output_rate, rel=0.02)
    assert rows["isl"].sum() == _successful(metrics, "prompt_token_count")["total_sum"]
    # TPOT runs to the end of the stream (as vllm bench serve's); GuideLLM's ITL stops at the last token's chunk
    to_end = [(t["request_end"] - t["first_token_iteration"]) / (n - 1) for t, n in timings]
    assert summary["tpot_mean_s"] == pytest.approx(statistics.fmean(to_end))
    itl = _successful(metrics, "inter_token_latency_ms")["mean"] / 1e3
    assert itl <= summary["tpot_mean_s"] <= itl * tpot_over_itl
    # queue time is vLLM's own (--enable-per-request-metrics on the test server)
    queue = statistics.fmean(r["response_metrics"]["queue_time_ms"] for r in requests) / 1e3
    assert summary["queue_mean_s"] == pytest.approx(queue)
    assert (rows["osl"] == 16).all()  # what GuideLLM asked for: max_completion_tokens in the body it sent
    client = store.run_meta(run_id)["client_summary"]
    assert client["ttft_p50_s"] == pytest.approx(_successful(metrics, "time_to_first_token_ms")["median"] / 1e3)
    assert client["tpot_mean_s"] == pytest.approx(itl)
