"""A scenario resolved once for a prediction: its model spec, device, memory plan, step model, request list and
arrivals, checked, in one frozen record the driver and the assembly read (the model's config is loaded once)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from engine.arrivals import ArrivalProcess, ClientLoop, FrontendCost, frontend_intake
from engine.catalog import GpuSpec, ModelSpec, load_model
from engine.memory import MemoryPlan, memory_plan
from engine.perf import Calibration, StepModel
from engine.scenario import Scenario
from engine.sim.config import SimulationError
from engine.workload import request_lengths


@dataclass(frozen=True)
class ResolvedScenario:
    scenario: Scenario
    model: ModelSpec
    device: GpuSpec
    memory: MemoryPlan
    step_model: StepModel
    calibration: Calibration
    isl: np.ndarray
    osl: np.ndarray
    arrival: np.ndarray  # engine arrival time per request (a closed loop's are filled in as it runs)
    sent: np.ndarray | None  # a bench client's send time per request (None: no client)
    client_loops: tuple[ClientLoop | None, ...]  # one per DP replica (None: open loop)

    @property
    def token_budget(self) -> int:
        """A PP round's token budget: pp × max_num_batched_tokens (see engine.perf)."""
        return self.scenario.max_num_batched_tokens * self.scenario.pp


@lru_cache(maxsize=256)
def _memory(s: Scenario, model: ModelSpec, device: GpuSpec) -> MemoryPlan:
    return memory_plan(
        model, device, dp=s.dp, tp=s.tp, pp=s.pp, gpu_memory_utilization=s.gpu_memory_utilization,
        block_size=s.block_size, max_model_len=s.max_model_len, max_num_batched_tokens=s.max_num_batched_tokens,
        dtype=s.dtype, quantization=s.quantization, kv_cache_dtype=s.kv_cache_dtype,
        kv_cache_memory_bytes=s.kv_cache_memory_bytes, max_num_seqs=s.max_num_seqs,
    )  # fmt: skip


def _step_model(s: Scenario, model: ModelSpec, device: GpuSpec, calibration: Calibration) -> StepModel:
    return _step_model_of(
        model, device, s.tp, s.pp, s.dtype, s.quantization, s.kv_cache_dtype, calibration, s.max_num_batched_tokens,
        s.async_scheduling,
    )  # fmt: skip


@lru_cache(maxsize=64)
def _step_model_of(
    model: ModelSpec, device: GpuSpec, tp: int, pp: int, dtype: str, quant: str, kv_dtype: str, cal: Calibration,
    max_num_batched_tokens: int, async_scheduling: bool,
) -> StepModel:  # fmt: skip
    return StepModel(model, device, tp, pp, dtype, quant, kv_dtype, cal, max_num_batched_tokens, async_scheduling)


def resolve(
    scenario: Scenario,
    requests: np.ndarray | None,
    calibration: Calibration,
    step_model: StepModel | None = None,
    arrivals_s: np.ndarray | None = None,
    frontend: FrontendCost | None = None,
) -> ResolvedScenario:
    """Resolve and check a scenario for one prediction (see ``engine.simulate.predict`` for the arguments)."""
    model = load_model(scenario.model)
    device = scenario.device()
    plan = _memory(scenario, model, device)
    if not plan.feasible:
        raise SimulationError(f"layout dp={scenario.dp} tp={scenario.tp} pp={scenario.pp} is infeasible: {plan.reason}")
    isl, osl = _request_list(scenario, requests)
    arrival, sent, loops = _arrivals(scenario, len(isl), arrivals_s, frontend)
    _check_fits(isl, osl, plan)
    sm = step_model or _step_model(scenario, model, device, calibration)
    return ResolvedScenario(scenario, model, device, plan, sm, calibration, isl, osl, arrival, sent, loops)


def _request_list(scenario: Scenario, requests: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if requests is None:
        lengths = request_lengths(scenario.workload, scenario.num_requests, scenario.seed)
    else:
        lengths = np.asarray(requests, dtype=np.int64)
        if lengths.ndim != 2 or lengths.shape[1] != 2 or len(lengths) == 0 or (lengths < 1).any():
            raise SimulationError("requests must be a non-empty (n, 2) array of positive (isl, osl)")
    return lengths[:, 0].copy(), lengths[:, 1].copy()


def _check_fits(isl: np.ndarray, osl: np.ndarray, plan: MemoryPlan) -> None:
    max_len = plan.max_model_len
    too_long = np.flatnonzero(isl + osl > max_len)
    if len(too_long):
        i = int(too_long[0])
        raise SimulationError(
            f"request {i} needs {isl[i] + osl[i]} tokens but max_model_len is {max_len}; raise max_model_len"
        )
    pool = plan.usable_kv_blocks
    longest_blocks = int(-(-(isl + osl - 1).max() // plan.block_size))
    if longest_blocks > pool:
        raise SimulationError(
            f"the longest request needs {longest_blocks} KV blocks but a replica holds {pool}: it could never finish"
        )


def _arrivals(
    scenario: Scenario, n: int, arrivals_s: np.ndarray | None, frontend: FrontendCost | None
) -> tuple[np.ndarray, np.ndarray | None, tuple[ClientLoop | None, ...]]:
    """Engine arrival times, a bench client's send times, and its closed loops (one per DP replica)."""
    rate = scenario.arrival_rate
    arrival = np.arange(n, dtype=float) / rate if rate else np.zeros(n)
    client = _bench_client(scenario) if arrivals_s is None else None
    if client is None and frontend is not None and arrivals_s is None and not rate:
        client = ArrivalProcess()  # served with the bench's defaults: every request sent at t = 0, no cap
    frontend = frontend or FrontendCost()
    sent = None
    loops: tuple[ClientLoop | None, ...] = (None,) * scenario.dp
    if client is not None:
        sent = client.send_times(n, scenario.seed)
        arrival = frontend_intake(sent, frontend.request_s)
        loops = tuple(_client_loops(client, sent, scenario.dp, frontend))
    if arrivals_s is not None:
        arrival = np.asarray(arrivals_s, dtype=float)
        if arrival.shape != (n,) or not np.isfinite(arrival).all() or (arrival < 0).any():
            raise SimulationError(f"arrivals_s must hold {n} finite times >= 0, one per request")
    return arrival, sent, loops


def _bench_client(scenario: Scenario) -> ArrivalProcess | None:
    """The scenario's `vllm bench serve` client, or None when it has none (a batch, or evenly spaced arrivals)."""
    if scenario.request_rate is None and scenario.max_concurrency is None and scenario.burstiness == 1.0:
        return None
    rate = scenario.request_rate if scenario.request_rate is not None else float("inf")
    return ArrivalProcess(rate, scenario.burstiness, scenario.max_concurrency)


def _client_loops(client: ArrivalProcess, sent: np.ndarray, dp: int, frontend: FrontendCost) -> list[ClientLoop | None]:
    """One closed loop per DP replica (None for an open loop). The client's C slots are split over the replicas
    the round-robin router feeds, C // dp each and one more for the first C mod dp: with symmetric replicas each
    holds about C / dp in flight. The one API server's intake is shared, so each replica sees it dp times slower."""
    if client.max_concurrency is None:
        return [None] * dp
    c = client.max_concurrency
    shared = replace(frontend, request_s=frontend.request_s * dp)
    return [ClientLoop(sent[r::dp], c // dp + (1 if r < c % dp else 0), shared) for r in range(dp)]
