"""The planner and the paper's qualitative findings (arXiv 2605.19775, §IV–V) on 8×H200."""

import pytest

from engine.memory import memory_plan
from engine.planner import plan
from engine.scenario import Scenario, valid_layouts
from engine.simulate import predict


def test_405b_dp_infeasible_tp8_far_ahead_of_pp8() -> None:
    layouts = plan(Scenario(model="Llama-3.1-405B", gpus=8, num_requests=300))
    assert len(layouts) == len(valid_layouts(8))
    feasible = [r for r in layouts if r.feasible]
    assert {(r.dp, r.tp, r.pp) for r in feasible} == {(1, 8, 1), (1, 4, 2), (1, 2, 4), (1, 1, 8)}
    assert all("weights need" in r.reason for r in layouts if not r.feasible)
    assert layouts[-1].feasible is False  # infeasible listed last
    best = feasible[0]
    assert (best.dp, best.tp, best.pp) == (1, 8, 1)
    pp8 = next(r for r in feasible if r.pp == 8)
    assert pp8.completion_s is not None and best.completion_s is not None
    assert pp8.completion_s > 3 * best.completion_s  # paper: 7,537 s vs 986 s
    times = [r.completion_s for r in feasible]
    assert times == sorted(times)
    assert all(
        r.reason.split(":")[0] in {"capacity-bound", "bandwidth-bound", "communication-bound", "compute-bound"}
        for r in feasible
    )


def test_32b_hybrid_beats_pure_dp_and_pure_tp() -> None:
    """§V-B: DP=4×TP=2 (484 s) ahead of TP=8 (686 s) and DP=8 (857 s). Over every layout the planner ranks, the best
    is a DP×TP hybrid, and every DP×TP hybrid without PP is ahead of both pure layouts."""
    layouts = plan(Scenario(model="DeepSeek-R1-Distill-Qwen-32B", gpus=8, num_requests=1000))
    assert len(layouts) == len(valid_layouts(8)) and all(r.feasible for r in layouts)
    best = layouts[0]
    assert best.dp > 1 and best.tp > 1 and best.pp == 1
    rank = {(r.dp, r.tp, r.pp): k for k, r in enumerate(layouts)}
    hybrids = [rank[(dp, tp, 1)] for dp, tp in ((2, 4), (4, 2))]
    assert max(hybrids) < rank[(1, 8, 1)] < rank[(8, 1, 1)]


def test_dp_capacity_trap_for_32b() -> None:
    """Observation 4: DP replicas each hit their small KV ceiling; TP pools memory and avoids the cliff."""
    dp8 = predict(Scenario(model="32B", gpus=8, dp=8, num_requests=1000)).summary
    tp8 = predict(Scenario(model="32B", gpus=8, tp=8, num_requests=1000)).summary
    assert dp8["preemptions"] > 0 and dp8["bound_regime"] == "capacity-bound"
    assert tp8["preemptions"] == 0


def test_mla_gives_r1_pipeline_capacity() -> None:
    """§V-C: MLA's latent is replicated across TP ranks, so PP=4×TP=2 holds over 3× the KV tokens of TP=8, and R1
    favours a hybrid of pipeline and tensor parallelism over pure TP=8 (the planner's best has PP stages)."""
    tp8 = memory_plan("DeepSeek-R1", "H200", tp=8)
    pp4 = memory_plan("DeepSeek-R1", "H200", tp=2, pp=4)
    assert tp8.feasible and pp4.feasible
    assert pp4.kv_capacity_tokens > 3 * tp8.kv_capacity_tokens
    layouts = [r for r in plan(Scenario(model="DeepSeek-R1", gpus=8)) if r.feasible]
    best = layouts[0]
    assert best.pp > 1 and best.tp > 1
    rank = {(r.dp, r.tp, r.pp): k for k, r in enumerate(layouts)}
    assert rank[(best.dp, best.tp, best.pp)] < rank[(1, 8, 1)]


def test_r1_pp4_tp2_ahead_of_tp8_as_the_paper_measured() -> None:
    """§V-C measured PP=4×TP=2 at 1,663 s and TP=8 at 2,047 s. With vLLM's default 8,192-token budget the engine
    predicts TP=4×PP=2 2,238 s, PP=4×TP=2 2,390 s, TP=8 2,438 s (datasheet defaults): since the host's scheduling
    and sampling step is paid once per micro-batch rather than once per stage (engine.perf.round_cost), PP's
    3.3× KV capacity (MLA latent replicated under TP) puts it ahead of TP=8 (it was 2,405 s vs 2,359 s)."""
    layouts = [r for r in plan(Scenario(model="DeepSeek-R1", gpus=8)) if r.feasible]
    rank = {(r.dp, r.tp, r.pp): k for k, r in enumerate(layouts)}
    assert rank[(1, 2, 4)] < rank[(1, 8, 1)]


def test_small_budget_plan_ranks_everything() -> None:
    layouts = plan(Scenario(model="8B", gpus=4, num_requests=64, workload="fixed:100,300"))
    assert [(r.dp, r.tp, r.pp) for r in layouts if not r.feasible] == []
    assert len(layouts) == len(valid_layouts(4))
    assert layouts[0].completion_s == pytest.approx(min(r.completion_s for r in layouts))  # type: ignore[type-var]
