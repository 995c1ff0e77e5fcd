"""Reading a measured run's timeline the way the scheduler saw it: when requests arrived, when preemption began."""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.fidelity.runs import arrival_steps, device_key, prefix_caching_of, queue_cliff_onset, ranks_on_host


def _samples(t: list[float], running: list[int], waiting: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"t_s": t, "running": running, "waiting": waiting})


def test_arrival_steps_follow_the_schedulers_count_of_known_requests() -> None:
    # Step 1 saw 2 requests, step 2 all 5; request 0 finished at 0.25 s.
    samples = _samples([0.1, 0.2, 0.3, 0.4], [2, 5, 4, 0], [0, 0, 0, 0])
    finished = np.array([0.25, 0.5, 0.5, 0.5, 0.5])
    steps = arrival_steps(samples, np.zeros(5), finished)
    assert steps.tolist() == [0, 0, 1, 1, 1]


def test_queue_cliff_onset_is_the_first_move_back_from_running_to_waiting() -> None:
    # 0.1: intake (waiting grows, running too); 0.3: two requests pushed back; the counter would say much later.
    samples = _samples([0.0, 0.1, 0.2, 0.3, 0.4], [0, 8, 8, 6, 6], [10, 2, 2, 4, 4])
    assert queue_cliff_onset(samples, last_arrival_s=0.0) == 0.3
    assert queue_cliff_onset(_samples([0.0, 0.1], [4, 3], [0, 0]), 0.0) is None  # a finish, not a preemption


def test_calibration_groups_and_prefix_caching_from_run_json() -> None:
    profile = {"kind": "cpu", "cpu_model": "AMD EPYC 9R14", "threads": 1}
    one = {"device": "cpu", "device_profile": profile, "dp": 1, "tp": 1, "pp": 1}
    assert device_key(one) == "cpu-amd-epyc-9r14-1t"
    # One group per host across layouts (issue #11): a DP=2 run shares it; its ranks' contention is a parameter.
    assert device_key({**one, "dp": 2}) == device_key({**one, "tp": 2}) == "cpu-amd-epyc-9r14-1t"
    assert ranks_on_host({**one, "dp": 2, "tp": 2}) == 4 and ranks_on_host({}) == 1
    assert device_key({"device": "H200", "dp": 8}) == "H200"
    # A host profiled with its matmul ISA gets its own group: same CPU name, with and without native bf16.
    avx2 = {**one, "device_profile": {**profile, "isa": "avx2"}}
    assert device_key(avx2) == "cpu-amd-epyc-9r14-avx2-1t" != device_key(one)
    assert prefix_caching_of({"collector": {"enable_prefix_caching": False}}) is False
    assert prefix_caching_of({}) is True


def test_decode_step_times_take_pure_decode_steps_by_batch_size() -> None:
    from engine.fidelity.report import decode_step_times

    t = np.concatenate([[0.0, 0.05], 0.05 + np.cumsum(np.full(12, 0.004)), 0.098 + np.cumsum(np.full(12, 0.006))])
    running = np.concatenate([[0, 4], np.full(12, 4), np.full(12, 8)])
    gen = np.concatenate([[0, 4], 4 + np.cumsum(np.full(12, 4)), 52 + np.cumsum(np.full(12, 8))])
    prompt = np.concatenate([[0, 128], np.full(24, 128)])  # the first step prefilled: not a decode step
    samples = pl.DataFrame(
        {"t_s": t, "running": running, "generation_tokens_total": gen, "prompt_tokens_total": prompt}
    )
    times = decode_step_times(samples)
    assert set(times) == {4, 8}
    assert abs(times[4] - 0.004) < 1e-9 and abs(times[8] - 0.006) < 1e-9
