"""Prediction: resolve the scenario once, run each DP replica's scheduler behind the round-robin router, and
assemble the timeline, the per-request frame and the summary."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import polars as pl

from engine.arrivals import FrontendCost
from engine.memory import MemoryPlan
from engine.perf import Calibration, StepModel
from engine.scenario import Scenario
from engine.sim.assemble import (
    bound_regime,
    first_preemption,
    latency_figures,
    merge_timeline,
    peak,
    request_frame,
    time_fractions,
)
from engine.sim.replica import ReplicaConfig, StepLog, StepPricer, simulate_replica
from engine.sim.resolve import ResolvedScenario, resolve
from engine.sim.state import BusyTotals, Outcomes, TracePoints
from engine.summary import RunSummary
from engine.vllm_rules import V0_BLOCK_MANAGER_WATERMARK
from engine.workload import parse_workload


@dataclass
class Prediction:
    scenario: Scenario
    memory: MemoryPlan
    timeline: pl.DataFrame
    requests: pl.DataFrame
    summary: RunSummary
    calibration: Calibration = field(default_factory=Calibration)
    client_sent_s: np.ndarray | None = None  # a bench client's send time per request (its own clock's start)
    engine_steps: int = 0  # scheduler steps (PP rounds) over all replicas: the frontend gets one output message each


def predict(
    scenario: Scenario,
    requests: np.ndarray | None = None,
    calibration: object | None = None,
    prefix_caching: bool = True,
    step_model: StepModel | None = None,
    arrivals_s: np.ndarray | None = None,
    frontend: FrontendCost | None = None,
) -> Prediction:
    """Simulate a scenario: timeline, per-request records and a summary comparable field by field with a run.

    ``prefix_caching`` (vLLM v1's default) lets a re-admitted request reuse its blocks not yet evicted.
    ``step_model`` prices the steps instead of the scenario's own.
    ``arrivals_s`` gives each request's arrival time (a measured run's own), overriding ``arrival_rate``.
    A scenario with the bench client's ``request_rate``/``burstiness``/``max_concurrency`` is driven as
    ``vllm bench serve`` drives a server (engine.arrivals), through ``frontend`` (the API server's cost; None: none).
    Predictions of a workload profile with the scenario's own step model are cached (the dashboard asks for the
    same scenario on every rerun).
    """
    cal = Calibration.from_object(calibration)
    if (
        requests is None
        and step_model is None
        and arrivals_s is None
        and parse_workload(scenario.workload).kind != "file"
    ):
        return _predict_cached(scenario, cal, prefix_caching, frontend)
    return simulate(resolve(scenario, requests, cal, step_model, arrivals_s, frontend), prefix_caching)


@lru_cache(maxsize=32)
def _predict_cached(
    scenario: Scenario, cal: Calibration, prefix_caching: bool, frontend: FrontendCost | None = None
) -> Prediction:
    return simulate(resolve(scenario, None, cal, None, None, frontend), prefix_caching)


def simulate(
    rs: ResolvedScenario,
    prefix_caching: bool = True,
    step_logs: list[StepLog] | None = None,
    price: StepPricer | None = None,
) -> Prediction:
    """Run a resolved scenario's replicas and assemble the prediction. ``step_logs``, when given, receives one
    StepLog per replica with every priced step's inputs; ``price`` replaces the step model's pricing (a step
    clock, ``replica.unit_step_cost``, for engine.fidelity.steps)."""
    price = price or rs.step_model.round_cost
    s, plan = rs.scenario, rs.memory
    cfg = ReplicaConfig(
        plan.usable_kv_blocks, plan.block_size, s.max_num_seqs, rs.token_budget, prefix_caching,
        async_scheduling=rs.step_model.host_overlaps_device,
    )  # fmt: skip
    if not s.enable_chunked_prefill:  # vLLM V0's scheduler and block manager (engine.vllm_rules)
        watermark = int(V0_BLOCK_MANAGER_WATERMARK * plan.usable_kv_blocks)
        cfg = replace(cfg, enable_chunked_prefill=False, watermark_blocks=watermark)
    n = len(rs.isl)
    result = Outcomes.empty(n)
    traces: list[TracePoints] = []
    totals = BusyTotals()
    # The scheduler loop allocates millions of small acyclic objects (tuples, lists): the cyclic collector would
    # scan them again and again for nothing, so it pauses for the simulation.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(s.dp):
            idx = np.arange(r, n, s.dp)
            if len(idx) == 0:
                continue
            log = StepLog() if step_logs is not None else None
            trace = TracePoints()
            loop = rs.client_loops[r]
            out = simulate_replica(rs.isl[idx], rs.osl[idx], rs.arrival[idx], price, cfg, trace, totals, loop, log)
            for name in ("first_scheduled_s", "first_token_s", "finished_s", "num_preemptions", "generated_tokens"):
                getattr(result, name)[idx] = getattr(out, name)
            if loop is not None:  # a closed loop's send and engine arrival times are known only now
                rs.sent[idx] = loop.sent
                rs.arrival[idx] = loop.engine_arrival
            trace.finish()
            traces.append(trace)
            if step_logs is not None and log is not None:
                step_logs.append(log)
    finally:
        if gc_was_enabled:
            gc.enable()
    return _assemble(rs, result, traces, totals)


def _assemble(rs: ResolvedScenario, result: Outcomes, traces: list[TracePoints], totals: BusyTotals) -> Prediction:
    pool = rs.memory.usable_kv_blocks
    timeline = merge_timeline(traces, pool * rs.scenario.dp, rs.step_model)
    req = request_frame(
        rs.isl, rs.osl, rs.arrival, result.first_scheduled_s, result.first_token_s, result.finished_s,
        result.num_preemptions,
    )  # fmt: skip
    gen_tokens = int(result.generated_tokens.sum())  # conservation: equals osl.sum() (tested)
    completion = float(np.nanmax(result.finished_s))
    preemptions = int(result.num_preemptions.sum())
    summary = RunSummary(
        completion_s=completion,
        cliff_onset_s=first_preemption(traces),
        preemptions=preemptions,
        peak_running=peak(traces, "running", timeline["running"]),
        peak_kv_usage=peak(traces, "used_blocks", timeline["kv_usage"]) / (pool if len(traces) == 1 else 1),
        kv_capacity_tokens=rs.memory.kv_capacity_tokens,
        num_requests=len(rs.isl),
        generated_tokens=gen_tokens,
        generation_tokens_per_s=gen_tokens / completion if completion > 0 else 0.0,
        bound_regime=bound_regime(preemptions, totals),
        **latency_figures(req),
        time_fractions=time_fractions(totals),
        model=rs.model.name,
        calibration=rs.calibration.source,
    )
    return Prediction(rs.scenario, rs.memory, timeline, req, summary, rs.calibration, rs.sent, totals.steps)
