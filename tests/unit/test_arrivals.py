"""The bench client's arrival process (engine.arrivals) and its closed loop in the simulator (engine.simulate)."""

import math

import numpy as np
import pytest

from engine.arrivals import ArrivalError, ArrivalProcess, ClientLoop, FrontendCost, frontend_intake
from engine.scenario import Scenario, ScenarioError, validate_scenario
from engine.simulate import Prediction, predict
from engine.workload import request_lengths


def served(model: str, pool_bytes: int = 8 << 20, **kw: object) -> Scenario:
    base = dict(
        model=model,
        gpu="cpu-host",
        kv_cache_memory_bytes=pool_bytes,
        block_size=32,
        num_requests=60,
        workload="lognormal:64,0.5,96,0.6",
        max_num_seqs=32,
        max_num_batched_tokens=256,
        max_model_len=2048,
    )
    base.update(kw)
    return Scenario(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gaps_have_the_rate_and_the_gamma_spread(burstiness: float) -> None:
    """Mean gap 1/rate exactly (the client rescales the last send to n/rate); the gaps' coefficient of variation is
    a gamma's with shape = burstiness, 1/sqrt(burstiness) (1: Poisson)."""
    n, rate = 40_000, 8.0
    t = ArrivalProcess(rate, burstiness).send_times(n, seed=3)
    gaps = np.diff(np.concatenate([[0.0], t]))
    assert t[-1] == pytest.approx(n / rate, rel=1e-12)
    assert gaps.mean() == pytest.approx(1 / rate, rel=1e-12)
    assert gaps.std() / gaps.mean() == pytest.approx(1 / math.sqrt(burstiness), rel=0.03)
    assert (gaps >= 0).all()


def test_send_times_are_deterministic_for_a_seed_and_special_rates() -> None:
    p = ArrivalProcess(5.0, 0.5)
    assert np.array_equal(p.send_times(100, 1), p.send_times(100, 1))
    assert not np.array_equal(p.send_times(100, 1), p.send_times(100, 2))
    assert np.array_equal(ArrivalProcess().send_times(7, 0), np.zeros(7))  # request_rate inf: all at t = 0
    even = ArrivalProcess(4.0, math.inf).send_times(8, 0)  # burstiness inf: evenly spaced 1/rate
    assert np.allclose(even, np.arange(1, 9) / 4.0)
    with pytest.raises(ArrivalError, match="burstiness"):
        ArrivalProcess(1.0, 0.0)
    with pytest.raises(ArrivalError, match="max_concurrency"):
        ArrivalProcess(max_concurrency=0)
    with pytest.raises(ArrivalError, match="request_s"):
        FrontendCost(request_s=-1.0)


def test_frontend_intake_and_client_loop_by_hand() -> None:
    """Intake: arrival_i = max(send_i, arrival_{i−1}) + request_s. Closed loop, 2 slots, all due at 0: the first two
    go at 0; a finish at 1.0 frees a slot at 1.0 + token_s, the third is sent then, the fourth waits for the next."""
    assert np.allclose(frontend_intake(np.array([0.0, 0.0, 1.0]), 0.1), [0.1, 0.2, 1.1])
    loop = ClientLoop(np.zeros(4), 2, FrontendCost(request_s=0.1, token_s=0.05))
    assert np.allclose(loop.sent[:2], [0.0, 0.0]) and np.isinf(loop.sent[2:]).all()
    assert np.allclose(loop.engine_arrival[:2], [0.1, 0.2])
    loop.on_finished(np.array([1.0]))
    assert loop.sent[2] == pytest.approx(1.05) and loop.engine_arrival[2] == pytest.approx(1.15)
    assert loop.pending and np.isinf(loop.sent[3])
    loop.on_finished(np.array([1.5]))
    assert loop.sent[3] == pytest.approx(1.55) and not loop.pending


def _in_flight(p: Prediction) -> int:
    """Most requests in the engine at once: between their engine arrival and their finish."""
    arr, fin = p.requests["arrival_s"].to_numpy(), p.requests["finished_s"].to_numpy()
    times = np.concatenate([arr, fin])
    delta = np.concatenate([np.ones_like(arr), -np.ones_like(fin)])
    order = np.lexsort((delta, times))  # at a tie the finish comes first: its slot is what sends the next one
    return int(np.cumsum(delta[order]).max())


@pytest.mark.parametrize(
    "kw",
    [
        {"max_concurrency": 4},
        {"max_concurrency": 7, "request_rate": 30.0, "burstiness": 0.5},
        {"max_concurrency": 5, "dp": 2, "gpus": 2},
        {"max_concurrency": 6, "pp": 2, "gpus": 2},
    ],
)
def test_closed_loop_caps_the_engine_and_finishes_everything(tiny_model: str, kw: dict) -> None:
    s = served(tiny_model, **kw)
    p = predict(s, frontend=FrontendCost(request_s=0.001, token_s=0.0005))
    c = kw["max_concurrency"]
    assert _in_flight(p) <= c
    assert np.isfinite(p.requests["finished_s"].to_numpy()).all()
    assert p.summary["generated_tokens"] == int(p.requests["osl"].sum())
    sent = p.client_sent_s
    assert sent is not None and np.isfinite(sent).all() and (np.diff(sent[:: s.dp]) >= 0).all()
    assert (p.requests["arrival_s"].to_numpy() >= sent + 0.001 - 1e-12).all()  # through the frontend's intake


def test_one_slot_sends_each_request_when_the_last_one_is_read(tiny_model: str) -> None:
    p = predict(served(tiny_model, num_requests=12, max_concurrency=1), frontend=FrontendCost(0.002, 0.001))
    fin = p.requests["finished_s"].to_numpy()
    assert p.client_sent_s is not None
    assert np.allclose(p.client_sent_s[1:], fin[:-1] + 0.001)
    assert np.allclose(p.requests["arrival_s"].to_numpy()[1:], fin[:-1] + 0.003)


def test_a_cap_above_the_request_count_is_the_open_loop(tiny_model: str) -> None:
    open_ = predict(served(tiny_model, request_rate=50.0))
    capped = predict(served(tiny_model, request_rate=50.0, max_concurrency=1000))
    assert np.allclose(open_.requests["finished_s"].to_numpy(), capped.requests["finished_s"].to_numpy())


@pytest.mark.parametrize(
    "kw",
    [
        {"max_concurrency": 6},
        {"max_concurrency": 20, "request_rate": 40.0, "burstiness": 0.3},
        {"max_concurrency": 9, "dp": 2, "gpus": 2},
    ],
)
def test_closed_loop_fast_path_matches_the_step_by_step_scheduler(tiny_model: str, kw: dict) -> None:
    """The event-jumping windows (their loop in Python and compiled) and the general scheduler one step at a time give
    the same closed-loop run, with preemption (a pool of a few long requests) and prefix-cache hits."""
    import engine.sim.config as sim

    s = served(tiny_model, pool_bytes=2 << 20, max_model_len=1024, **kw)
    lengths = np.asarray(request_lengths(s.workload, s.num_requests, s.seed))
    fe = FrontendCost(0.0005, 0.0002)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sim, "USE_DECODE_WINDOWS", False)
        slow = predict(s, requests=lengths, frontend=fe)
    if kw["max_concurrency"] > 8:
        assert slow.summary["preemptions"] > 0
    for loop in ("python", "compiled"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sim, "WINDOW_LOOP", loop)
            fast = predict(s, requests=lengths, frontend=fe)
        assert fast.summary["preemptions"] == slow.summary["preemptions"], loop
        for col in ("arrival_s", "first_scheduled_s", "first_token_s", "finished_s"):
            assert np.allclose(fast.requests[col].to_numpy(), slow.requests[col].to_numpy(), rtol=1e-9), (loop, col)
        assert fast.client_sent_s is not None and slow.client_sent_s is not None
        assert np.allclose(fast.client_sent_s, slow.client_sent_s, rtol=1e-9), loop


def test_scenario_client_fields_are_checked(tiny_model: str) -> None:
    with pytest.raises(ScenarioError, match="arrival_rate"):
        validate_scenario(served(tiny_model, arrival_rate=2.0, max_concurrency=4))
    with pytest.raises(ScenarioError, match="max_concurrency"):
        validate_scenario(served(tiny_model, max_concurrency=1, dp=2, gpus=2))
    with pytest.raises(ScenarioError, match="burstiness"):
        validate_scenario(served(tiny_model, burstiness=0.0))
    assert validate_scenario(served(tiny_model, request_rate="inf")).request_rate is None  # type: ignore[arg-type]


def test_a_link_with_the_client_and_an_arrival_rate_keeps_the_client() -> None:
    from engine.scenario import scenario_from_params, scenario_to_params

    s, notices = scenario_from_params({"v": "1", "request_rate": "4", "burstiness": "0.5", "max_concurrency": "8"})
    assert (s.request_rate, s.burstiness, s.max_concurrency) == (4.0, 0.5, 8) and not notices
    assert scenario_from_params(scenario_to_params(s))[0] == s
    s, notices = scenario_from_params({"v": "1", "arrival_rate": "2", "max_concurrency": "8"})
    assert s.arrival_rate is None and s.max_concurrency == 8 and any("arrival_rate" in n for n in notices)
