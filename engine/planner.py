"""Parallelism planner: every DP×TP×PP layout of a GPU budget, sized, simulated and ranked.

Infeasible layouts are listed with the memory model's reason; feasible ones are simulated with the scenario's
workload and ranked by completion time (then throughput, then p99 E2E). Each gets a one-line reason naming what
bounds it: capacity (preemptions), bandwidth (HBM streaming of weights and KV), or communication (TP all-reduces,
PP hand-offs).

``plan_tuned`` ranks the layouts each at its own knee (engine.knee) instead of at the user's ``max_num_seqs``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from engine.knee import SLO, CliffLimit, Knee, Objective, find_knee
from engine.memory import memory_plan_for
from engine.scenario import Scenario, valid_layouts
from engine.simulate import SimulationError, predict
from engine.summary import RunSummary
from engine.workload import request_lengths


@dataclass(frozen=True)
class LayoutResult:
    dp: int
    tp: int
    pp: int
    feasible: bool
    completion_s: float | None
    generation_tokens_per_s: float | None
    e2e_p99_s: float | None
    reason: str
    kv_capacity_tokens: int = 0  # per replica
    preemptions: int | None = None
    bound_regime: str = ""

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _reason(summary: RunSummary, capacity_total: int) -> str:
    fractions = summary.time_fractions
    assert fractions is not None and summary.preemptions is not None
    pre = summary.preemptions
    comm = fractions["communication"]
    if pre:
        return (
            f"capacity-bound: {pre:,} preemptions; {capacity_total:,} KV tokens in all, "
            f"cliff at {summary.cliff_onset_s:.0f} s"
        )
    if comm > 0.25:
        return f"communication-bound: {comm:.0%} of step time in all-reduce / stage hand-off"
    if fractions["compute"] > fractions["memory"]:
        return f"compute-bound: prefill GEMMs dominate ({fractions['compute']:.0%} of step time)"
    return f"bandwidth-bound: streaming weights and KV takes {fractions['memory']:.0%} of step time, no preemption"


def plan(scenario: Scenario, calibration: object | None = None) -> list[LayoutResult]:
    """Rank every layout of ``scenario.gpus`` devices (TP within one node); best first, infeasible last."""
    gpu = scenario.device()
    lengths = request_lengths(scenario.workload, scenario.num_requests, scenario.seed)
    results: list[LayoutResult] = []
    for dp, tp, pp in valid_layouts(scenario.gpus, gpus_per_node=gpu.gpus_per_node):
        s = replace(scenario, dp=dp, tp=tp, pp=pp)
        mem = memory_plan_for(s)
        if not mem.feasible:
            results.append(LayoutResult(dp, tp, pp, False, None, None, None, mem.reason, mem.kv_capacity_tokens))
            continue
        try:
            pred = predict(s, requests=lengths, calibration=calibration)
        except SimulationError as exc:
            results.append(LayoutResult(dp, tp, pp, False, None, None, None, str(exc), mem.kv_capacity_tokens))
            continue
        sm = pred.summary
        results.append(
            LayoutResult(
                dp,
                tp,
                pp,
                True,
                float(sm.completion_s),
                float(sm.generation_tokens_per_s),
                float(sm.e2e_p99_s) if sm.e2e_p99_s is not None else None,
                _reason(sm, mem.kv_capacity_tokens * dp),
                mem.kv_capacity_tokens,
                int(sm.preemptions),
                str(sm.bound_regime),
            )
        )
    inf = float(np.inf)
    return sorted(
        results,
        key=lambda r: (
            not r.feasible,
            r.completion_s if r.completion_s is not None else inf,
            -(r.generation_tokens_per_s or 0.0),
            r.e2e_p99_s if r.e2e_p99_s is not None else inf,
        ),
    )


@dataclass(frozen=True)
class TunedLayout:
    """One layout at its own knee (engine.knee): the recommended max_num_seqs, its predicted figures, what bound it,
    and the gain over the user's own setting on the same layout."""

    dp: int
    tp: int
    pp: int
    feasible: bool  # fits in memory and some max_num_seqs meets the constraints
    knee: Knee | None  # None when the layout does not fit in memory
    reason: str  # why it cannot run, or what bound its knee

    @property
    def completion_s(self) -> float | None:
        return self.knee.best.completion_s if self.knee and self.feasible else None

    def as_dict(self) -> dict[str, object]:
        k = self.knee
        best = k.best if k and self.feasible else None
        return {
            "dp": self.dp,
            "tp": self.tp,
            "pp": self.pp,
            "feasible": self.feasible,
            "recommended_max_num_seqs": k.recommended.max_num_seqs if best and k else None,
            "recommended_max_num_batched_tokens": k.recommended.max_num_batched_tokens if best and k else None,
            "recommended_gpu_memory_utilization": k.recommended.gpu_memory_utilization if best and k else None,
            "completion_s": best.completion_s if best else None,
            "generation_tokens_per_s": best.generation_tokens_per_s if best else None,
            "ttft_p99_s": best.ttft_p99_s if best else None,
            "tpot_mean_s": best.tpot_mean_s if best else None,
            "e2e_p99_s": best.e2e_p99_s if best else None,
            "preemptions": best.preemptions if best else None,
            "bound": k.bound.value if k else "memory",
            "reason": self.reason,
            "current_max_num_seqs": k.scenario.max_num_seqs if k else None,
            "current_completion_s": k.current.completion_s if k else None,
            "current_generation_tokens_per_s": k.current.generation_tokens_per_s if k else None,
            "current_preemptions": k.current.preemptions if k else None,
            "gain_over_current": k.gain if best and k else None,
            "predictions": k.predictions if k else 0,
        }


def plan_tuned(
    scenario: Scenario,
    calibration: object | None = None,
    slo: SLO | None = None,
    cliff: CliffLimit | None = None,
    objective: Objective = Objective.COMPLETION,
    tune: tuple[str, ...] = ("max_num_seqs",),
) -> list[TunedLayout]:
    """Rank every layout at its own knee (the smallest setting within 1 % of its best), not at the user's setting:
    the paper's Observation 6 asks for layouts chosen by profiling, and a layout's rank at one fixed max_num_seqs
    says as much about that setting as about the layout. Best first; layouts that do not fit, or that no setting
    lets meet the constraints, last."""
    gpu = scenario.device()
    lengths = request_lengths(scenario.workload, scenario.num_requests, scenario.seed)
    out: list[TunedLayout] = []
    for dp, tp, pp in valid_layouts(scenario.gpus, gpus_per_node=gpu.gpus_per_node):
        s = replace(scenario, dp=dp, tp=tp, pp=pp)
        mem = memory_plan_for(s)
        if not mem.feasible:
            out.append(TunedLayout(dp, tp, pp, False, None, mem.reason))
            continue
        k = find_knee(s, objective, slo, cliff, calibration, tune=tune, requests=lengths)
        out.append(TunedLayout(dp, tp, pp, k.feasible, k, k.why))
    inf = float(np.inf)
    return sorted(out, key=lambda r: (not r.feasible, r.completion_s if r.completion_s is not None else inf))
