"""engine.served: `vllm bench serve`'s figures from a prediction, by hand and against vLLM's own code."""

from dataclasses import replace

import numpy as np
import pytest

from engine.arrivals import FrontendCost
from engine.scenario import Scenario
from engine.served import BenchResult, RandomDataset, ServedError, bench_metrics, predict_served, prefix_hits

# Three requests: sent at 0, 0, 1 s; first chunks at 0.1, 0.2, 1.3; last chunks at 0.5, 0.2, 1.8; 5, 1, 11 outputs.
SENT = np.array([0.0, 0.0, 1.0])
FIRST = np.array([0.1, 0.2, 1.3])
LAST = np.array([0.5, 0.2, 1.8])
ISL = np.array([10, 20, 30])
OSL = np.array([5, 1, 11])


def test_bench_metrics_by_hand() -> None:
    """ttft 0.1, 0.2, 0.3 s; latency 0.5, 0.2, 0.8 s; tpot (one output token has none) 0.4/4 = 0.1 and 0.5/10 =
    0.05 s; the pooled gaps are 4 × 0.1 and 10 × 0.05 s; duration = the last chunk, 1.8 s."""
    m = bench_metrics(SENT, FIRST, LAST, ISL, OSL)
    assert m["duration_s"] == pytest.approx(1.8)
    assert m["completed"] == 3 and m["total_input_tokens"] == 60 and m["total_output_tokens"] == 17
    assert m["request_throughput"] == pytest.approx(3 / 1.8)
    assert m["output_throughput"] == pytest.approx(17 / 1.8)
    assert m["total_token_throughput"] == pytest.approx(77 / 1.8)
    assert m["mean_ttft_ms"] == pytest.approx(200.0)
    assert m["median_ttft_ms"] == pytest.approx(200.0)
    assert m["p99_ttft_ms"] == pytest.approx(298.0)  # 200 + 0.99 · (300 − 200), linear
    assert m["mean_tpot_ms"] == pytest.approx(75.0)
    assert m["median_tpot_ms"] == pytest.approx(75.0)
    assert m["p99_tpot_ms"] == pytest.approx(99.5)
    assert m["mean_itl_ms"] == pytest.approx(900 / 14)
    assert m["median_itl_ms"] == pytest.approx(50.0)
    assert m["p99_itl_ms"] == pytest.approx(100.0)
    assert m["mean_e2el_ms"] == pytest.approx(500.0)
    # The frontend's delivery delay moves every chunk, not the gaps between them.
    d = bench_metrics(SENT, FIRST, LAST, ISL, OSL, chunk_delay_s=0.01)
    assert d["mean_ttft_ms"] == pytest.approx(210.0) and d["mean_tpot_ms"] == pytest.approx(75.0)
    assert d["duration_s"] == pytest.approx(1.81)


def test_prefix_hits_are_whole_blocks_and_never_the_last_prompt_token() -> None:
    assert prefix_hits(np.array([300, 300, 300, 100, 257]), 256, 128).tolist() == [0, 256, 256, 0, 256]
    assert prefix_hits(np.array([300, 300]), 200, 128).tolist() == [0, 128]
    assert prefix_hits(np.array([256, 256]), 256, 128).tolist() == [0, 128]  # the last prompt token is computed


def test_random_dataset_lengths() -> None:
    ds = RandomDataset(input_len=100, output_len=20, range_ratio=0.5, prefix_len=7)
    a = ds.lengths(500, seed=1)
    assert np.array_equal(a, ds.lengths(500, seed=1))
    assert a[:, 0].min() >= 50 + 7 and a[:, 0].max() <= 150 + 7
    assert a[:, 1].min() >= 10 and a[:, 1].max() <= 30
    assert np.array_equal(RandomDataset(64, 8).lengths(3, 0), [[64, 8]] * 3)
    with pytest.raises(ServedError, match="range_ratio"):
        RandomDataset(range_ratio=1.0)


def _cpu(model: str, **kw: object) -> Scenario:
    base = dict(
        model=model,
        gpu="cpu-host",
        kv_cache_memory_bytes=8 << 20,
        block_size=32,
        num_requests=40,
        max_num_seqs=32,
        max_num_batched_tokens=512,
        max_model_len=2048,
    )
    base.update(kw)
    return Scenario(**base)  # type: ignore[arg-type]


def test_predict_served_closed_loop_record(tiny_model: str) -> None:
    fe = FrontendCost(request_s=0.002, token_s=0.0001, step_s=0.0003, source="test")
    r = predict_served(_cpu(tiny_model, max_concurrency=8), RandomDataset(96, 24, 0.25), frontend=fe)
    assert isinstance(r, BenchResult)
    assert r.completed == 40 and r.total_output_tokens == int(RandomDataset(96, 24, 0.25).lengths(40, 0)[:, 1].sum())
    assert r.request_throughput == pytest.approx(40 / r.duration_s)
    assert 0 < r.median_tpot_ms <= r.p99_tpot_ms and r.mean_ttft_ms > 0
    assert r.mean_itl_ms == pytest.approx(r.mean_tpot_ms, rel=0.2)
    assert r.engine_steps >= r.total_output_tokens / 8  # at most 8 requests decode together
    work = 40 * 0.002 + r.total_output_tokens * 0.0001 + r.engine_steps * 0.0003
    assert r.frontend_utilization == pytest.approx(work / r.duration_s)
    assert r.notes[0] == "frontend: test"


def test_a_per_request_frontend_cost_caps_the_request_rate(tiny_model: str) -> None:
    """Very short outputs: the engine alone would finish far faster than one intake every 20 ms allows."""
    s = _cpu(tiny_model, num_requests=60, max_concurrency=32)
    free = predict_served(s, "fixed:16,1", frontend=FrontendCost())
    capped = predict_served(s, "fixed:16,1", frontend=FrontendCost(request_s=0.02))
    assert free.request_throughput > 100
    assert capped.request_throughput == pytest.approx(1 / 0.02, rel=0.05)
    # The bench's defaults (request rate inf, no cap): every request is sent at 0, the intake still paces them.
    open_ = predict_served(replace(s, max_concurrency=None), "fixed:16,1", frontend=FrontendCost(request_s=0.02))
    assert open_.request_throughput == pytest.approx(1 / 0.02, rel=0.05)
    assert open_.mean_ttft_ms > capped.mean_ttft_ms  # all 60 wait in the intake queue, each on its own clock


def test_a_shared_prefix_shortens_prefill(tiny_model: str) -> None:
    s = _cpu(tiny_model, num_requests=30, max_concurrency=4)
    cold = predict_served(s, RandomDataset(64, 16, prefix_len=0), frontend=FrontendCost())
    warm = predict_served(s, RandomDataset(32, 16, prefix_len=32 * 30), frontend=FrontendCost())
    assert warm.prefix_hit_tokens == 29 * 30 * 32
    assert warm.total_input_tokens == 30 * (32 + 960)
    same = predict_served(s, "fixed:992,16", frontend=FrontendCost(), prefix_len=992)
    assert same.prefix_hit_tokens == warm.prefix_hit_tokens
    assert warm.mean_ttft_ms < predict_served(s, "fixed:992,16", frontend=FrontendCost()).mean_ttft_ms
    assert cold.prefix_hit_tokens == 0
    with pytest.raises(ServedError, match="prefix_len"):
        predict_served(s, RandomDataset(32, 16), prefix_len=4)


@pytest.mark.vllm
def test_bench_metrics_equal_vllms_own_calculate_metrics() -> None:
    """vLLM's ``calculate_metrics`` on the hand case, each request's chunks at its mean gap, gives our figures."""
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput
    from vllm.benchmarks.serve import calculate_metrics

    outputs = []
    for s, f, last, i, o in zip(SENT, FIRST, LAST, ISL, OSL, strict=True):
        gap = (last - f) / (o - 1) if o > 1 else 0.0
        outputs.append(
            RequestFuncOutput(
                success=True, latency=last - s, ttft=f - s, itl=[gap] * (o - 1), prompt_len=int(i),
                output_tokens=int(o), start_time=float(s),
            )
        )  # fmt: skip
    theirs, _ = calculate_metrics([], outputs, 1.8, None, [99.0], {})
    ours = bench_metrics(SENT, FIRST, LAST, ISL, OSL)
    assert theirs.completed == ours["completed"] and theirs.total_output == ours["total_output_tokens"]
    for name in ("request_throughput", "output_throughput", "total_token_throughput"):
        assert getattr(theirs, name) == pytest.approx(ours[name]), name
    for metric in ("ttft", "tpot", "itl", "e2el"):
        assert getattr(theirs, f"mean_{metric}_ms") == pytest.approx(ours[f"mean_{metric}_ms"]), metric
        assert getattr(theirs, f"median_{metric}_ms") == pytest.approx(ours[f"median_{metric}_ms"]), metric
        assert dict(getattr(theirs, f"percentiles_{metric}_ms"))[99.0] == pytest.approx(ours[f"p99_{metric}_ms"])


@pytest.mark.vllm
def test_random_dataset_draws_vllms_own_lengths() -> None:
    from vllm.benchmarks.datasets.utils import get_sampling_params

    class _Tok:  # what get_sampling_params reads of a tokenizer
        vocab_size = 1000

        def num_special_tokens_to_add(self) -> int:
            return 1

    ins, outs, _ = get_sampling_params(np.random.default_rng(5), 300, 0.3, 512, 128, _Tok())
    ours = RandomDataset(512, 128, 0.3, prefix_len=0, num_special_tokens=1).lengths(300, 5)
    assert np.array_equal(ours[:, 0], ins) and np.array_equal(ours[:, 1], outs)


def test_scenario_with_client_takes_the_bench_flags() -> None:
    from engine.served import scenario_with_client

    s = scenario_with_client(Scenario(), float("inf"), 1.0, 64)
    assert (s.request_rate, s.burstiness, s.max_concurrency) == (None, 1.0, 64)
    assert scenario_with_client(Scenario(), 2.5, 0.5, None).request_rate == 2.5


def test_the_frontend_output_queue_delays_tokens_once_the_engine_outpaces_it() -> None:
    """Hand-worked: 2,000 tokens a second for 3 s through 1 ms of serial work per token: the queue grows by 1 s
    every second (lag 0, 1, 2, 3 s at the bin ends); at 500 tokens a second it never forms."""
    import polars as pl

    from engine.served import frontend_output_lag

    timeline = pl.DataFrame({"t_s": [0.0, 1.0, 2.0, 3.0], "generation_tokens_per_s": [0.0, 2000.0, 2000.0, 2000.0]})
    seen = frontend_output_lag(timeline, 1e-3)
    assert seen(np.array([0.0, 1.0, 2.5, 3.0])).tolist() == pytest.approx([0.0, 2.0, 5.0, 6.0])
    slow = timeline.with_columns(pl.col("generation_tokens_per_s") / 4)
    assert frontend_output_lag(slow, 1e-3)(np.array([3.0])).tolist() == [3.0]
    assert frontend_output_lag(timeline, 0.0)(np.array([3.0])).tolist() == [3.0]  # no cost: the engine's own times


def test_a_lagging_stream_sends_its_waiting_tokens_as_one_chunk() -> None:
    """vLLM's RequestOutputCollector merges a stream's outputs while its task lags, so the streams' backlog is at
    most one pass over them: 100 running streams at 1 ms a chunk lag 0.1 s, not the 1 s a second above. The
    intake does not queue ahead of them (tokenization runs on a worker thread so the loop keeps streaming): 1,500
    requests sent at t=0 at 1 ms each put one request's intake, 1 ms, ahead of a chunk, not 1.5 s."""
    import polars as pl

    from engine.served import frontend_output_lag

    timeline = pl.DataFrame(
        {"t_s": [0.0, 1.0, 2.0, 3.0], "generation_tokens_per_s": [0.0, 2000.0, 2000.0, 2000.0], "running": [100] * 4}
    )
    seen = frontend_output_lag(timeline, 1e-3)
    assert seen(np.array([0.0, 1.0, 2.0, 3.0])).tolist() == pytest.approx([0.0, 1.1, 2.1, 3.1])
    intake = frontend_output_lag(timeline, 1e-3, np.zeros(1500), 1e-3)
    assert intake(np.array([0.0, 1.0, 2.0, 3.0])).tolist() == pytest.approx([0.001, 1.101, 2.101, 3.101])


def test_the_intake_adds_lag_only_where_the_send_times_are_known() -> None:
    """The intake's share of the loop is counted per request sent: with no send times a request cost adds nothing
    (the streams' lag alone), and with sends but no per-token cost the intake alone delays a chunk, by at most one
    request's intake."""
    import polars as pl

    from engine.served import frontend_output_lag

    timeline = pl.DataFrame(
        {"t_s": [0.0, 1.0, 2.0, 3.0], "generation_tokens_per_s": [0.0, 2000.0, 2000.0, 2000.0], "running": [100] * 4}
    )
    at = np.array([0.0, 1.0, 2.0, 3.0])
    streams = frontend_output_lag(timeline, 1e-3)(at).tolist()
    assert frontend_output_lag(timeline, 1e-3, None, 1e-3)(at).tolist() == streams
    assert frontend_output_lag(timeline, 1e-3, np.zeros(0), 1e-3)(at).tolist() == streams
    assert frontend_output_lag(timeline, 0.0, None, 1e-3)(at).tolist() == at.tolist()
    intake_only = frontend_output_lag(timeline, 0.0, np.zeros(1500), 1e-3)(at)
    assert intake_only.tolist() == pytest.approx([0.001, 1.0, 2.0, 3.0])
