"""vLLM's async scheduling in the replica driver: a request that arrives while step n runs is first scheduled in
step n+2 (the engine core scheduled step n+1 as it launched step n), and at once on an engine with nothing to do."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from engine.scenario import Scenario
from engine.sim.replica import ReplicaConfig, simulate_replica, unit_step_cost
from engine.sim.state import BusyTotals, TracePoints
from engine.simulate import predict

CFG = ReplicaConfig(num_gpu_blocks=1000, block_size=16, max_num_seqs=64, token_budget=512)


def _first_scheduled(cfg: ReplicaConfig, arrival: list[float], isl: list[int], osl: list[int]) -> list[float]:
    out = simulate_replica(
        np.array(isl), np.array(osl), np.array(arrival), unit_step_cost, cfg, TracePoints(), BusyTotals()
    )
    return out.first_scheduled_s.tolist()


def test_a_request_arriving_during_step_n_first_runs_in_step_n_plus_2() -> None:
    # Request 0 decodes from step 0 on (each step lasts 1 on the step clock); request 1 arrives during step 2.
    arrival, isl, osl = [0.0, 2.5], [8, 8], [20, 4]
    assert _first_scheduled(CFG, arrival, isl, osl) == [0.0, 3.0]  # synchronous: the step after its arrival
    assert _first_scheduled(replace(CFG, async_scheduling=True), arrival, isl, osl) == [0.0, 4.0]


def test_an_idle_engine_schedules_an_arrival_at_once_with_async_scheduling() -> None:
    arrival, isl, osl = [0.0, 10.5], [8, 8], [3, 3]  # request 0 is done by t = 3: the engine idles until 10.5
    assert _first_scheduled(replace(CFG, async_scheduling=True), arrival, isl, osl) == [0.0, 10.5]


def test_async_scheduling_holds_a_request_one_step_longer_on_a_gpu_only() -> None:
    """A served run at a low request rate on a busy engine: a request waits for its first scheduling about half a
    step synchronously, one and a half with async scheduling. A CPU host's engine (no host/device overlap) and a
    PP engine (its batch queue is modelled by the round) schedule as before."""
    base = Scenario(model="8B", gpu="H100", num_requests=200, workload="fixed:128,128", request_rate=5.0)

    def queue_in_steps(s: Scenario) -> float:
        req = predict(s).requests
        return float(np.mean(req["queue_s"].to_numpy()) / np.mean(req["tpot_s"].to_numpy()))

    assert 0.3 < queue_in_steps(base) < 0.7
    assert 1.2 < queue_in_steps(replace(base, async_scheduling=True)) < 1.8
    for other in (replace(base, pp=2, gpus=2), replace(base, gpu="cpu-host", model="tiny-llama-4l")):
        assert predict(replace(other, async_scheduling=True)).requests["queue_s"].to_list() == (
            predict(other).requests["queue_s"].to_list()
        )
