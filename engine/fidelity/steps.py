"""Step traces: one simulation of a run in *step units*, re-timed for any calibration in a vectorised call.

When a whole batch arrives at t=0 (every bundled run), the scheduler's decisions — which request runs, when a
block runs out, who is preempted — depend on token and block counts only, never on how long a step takes. So the
run is simulated once on a clock that counts steps (``engine.sim.replica.unit_step_cost``: the simulator's times
are then step counts) while the replica driver logs the inputs of every step it prices (tokens, attention pairs,
KV tokens read, sequences: ``engine.sim.replica.StepLog``). For a candidate calibration the real step model prices
all logged steps in one numpy call; a cumulative sum turns step counts back into seconds. A fit can then afford
thousands of evaluations; ``test_fidelity_steps`` checks the re-timed figures against ``engine.simulate.predict``
run with the same calibration.

DP replicas are traced one by one (they are independent behind the round-robin router), so each keeps its own
clock. Runs whose requests arrive over time are not traced (arrivals interleave with steps); the fitter predicts
those in full instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine.catalog import GpuSpec, ModelSpec
from engine.perf import Calibration, StepModel
from engine.sim.predict import simulate
from engine.sim.replica import StepLog, unit_step_cost
from engine.sim.resolve import resolve

FAST_METRICS = (
    "completion_s",
    "cliff_onset_s",
    "ttft_mean_s",
    "tpot_mean_s",
    "e2e_mean_s",
    "queue_mean_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p99_s",
    "e2e_p50_s",
    "e2e_p99_s",
)


@dataclass(frozen=True)
class ReplicaTrace:
    steps: np.ndarray  # (4, S): tokens, attention pairs, KV tokens read, sequences of each step in order
    arrival: np.ndarray  # per request, in steps completed before it arrived
    first_scheduled: np.ndarray  # per request, in completed steps before it was first scheduled
    first_token: np.ndarray  # per request, in steps
    finished: np.ndarray  # per request, in steps
    osl: np.ndarray
    onset: int | None  # steps before the first preemption (None: no preemption)


@dataclass(frozen=True)
class StepTrace:
    """A run's step sequence; ``evaluate(calibration)`` gives its predicted figures in seconds."""

    replicas: tuple[ReplicaTrace, ...]
    model: ModelSpec
    device: GpuSpec
    tp: int
    pp: int
    dtype: str
    quantization: str
    kv_cache_dtype: str
    max_num_batched_tokens: int = 8192  # a PP round's micro-batch count depends on it (engine.perf.round_cost)
    async_scheduling: bool = False  # host work overlaps a one-stage GPU step (engine.perf)

    def step_model(self, calibration: Calibration) -> StepModel:
        return StepModel(
            self.model,
            self.device,
            self.tp,
            self.pp,
            self.dtype,
            self.quantization,
            self.kv_cache_dtype,
            calibration,
            self.max_num_batched_tokens,
            self.async_scheduling,
        )

    def evaluate(self, calibration: Calibration, percentiles: bool = True) -> dict[str, float | None]:
        """Completion, cliff onset and request-latency figures for one calibration (same keys as a summary).

        ``percentiles=False`` leaves out p50/p99 (the fit's loss uses means only; percentiles cost half the time).
        """
        sm = self.step_model(calibration)
        ttft, tpot, e2e, queue = [], [], [], []
        completion = 0.0
        onset: float | None = None
        for rep in self.replicas:
            dt = np.asarray(sm.round_cost(*rep.steps).time_s, dtype=float)
            clock = np.concatenate([[0.0], np.cumsum(np.broadcast_to(dt, rep.steps.shape[1]))])

            def at(units: np.ndarray, clock: np.ndarray = clock) -> np.ndarray:
                idx = np.rint(units).astype(np.int64)
                return clock[np.clip(idx, 0, len(clock) - 1)]

            arr, ft, fin = at(rep.arrival), at(rep.first_token), at(rep.finished)
            ttft.append(ft - arr)
            e2e.append(fin - arr)
            queue.append(at(rep.first_scheduled) - arr)
            tpot.append(np.where(rep.osl > 1, (fin - ft) / np.maximum(rep.osl - 1, 1), 0.0))
            completion = max(completion, float(clock[-1]))
            if rep.onset is not None:
                t_on = float(clock[min(rep.onset, len(clock) - 1)])
                onset = t_on if onset is None else min(onset, t_on)
        out: dict[str, float | None] = {"completion_s": completion, "cliff_onset_s": onset}
        for name, parts in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e), ("queue", queue)):
            values = np.concatenate(parts)
            out[f"{name}_mean_s"] = float(values.mean())
            if name != "queue" and percentiles:
                out[f"{name}_p50_s"] = float(np.percentile(values, 50))
                out[f"{name}_p99_s"] = float(np.percentile(values, 99))
        return out


def trace_run(
    scenario: Any, lengths: np.ndarray, prefix_caching: bool = True, arrival_steps: np.ndarray | None = None
) -> StepTrace:
    """Simulate each DP replica once in step units; ``arrival_steps``: steps done when each request arrived (a
    batch's submission loop), default all at step 0. A DP replica's requests count its own steps (approximated by
    the run's steps over the replicas)."""
    if scenario.arrival_rate:
        raise ValueError("a step trace needs a batch (no arrival rate); predict runs with arrivals in full")
    lengths = np.asarray(lengths, dtype=np.int64)
    arrivals = np.zeros(len(lengths)) if arrival_steps is None else np.asarray(arrival_steps, dtype=float)
    replica_scenario = replace(scenario, dp=1, gpus=scenario.tp * scenario.pp)
    reps = []
    resolved = None
    for r in range(scenario.dp):
        idx = np.arange(r, len(lengths), scenario.dp)
        if len(idx) == 0:
            continue
        sub = lengths[idx]
        s = replace(replica_scenario, num_requests=len(sub))
        sub_arrivals = np.floor(arrivals[idx] / scenario.dp)
        resolved = resolve(s, sub, Calibration(), arrivals_s=sub_arrivals)
        logs: list[StepLog] = []
        pred = simulate(resolved, prefix_caching, step_logs=logs, price=unit_step_cost)
        req = pred.requests
        onset = pred.summary.cliff_onset_s
        reps.append(
            ReplicaTrace(
                steps=logs[0].steps(),
                arrival=sub_arrivals,
                first_scheduled=req["first_scheduled_s"].to_numpy(),
                first_token=req["first_token_s"].to_numpy(),
                finished=req["finished_s"].to_numpy(),
                osl=sub[:, 1].astype(float),
                onset=None if onset is None else round(onset),
            )
        )
    assert resolved is not None  # lengths is non-empty: replica 0 has a request
    return StepTrace(
        tuple(reps),
        resolved.model,
        resolved.device,
        scenario.tp,
        scenario.pp,
        scenario.dtype,
        scenario.quantization,
        scenario.kv_cache_dtype,
        scenario.max_num_batched_tokens,
        scenario.async_scheduling,
    )
