"""The knee finder: its bisections give the same answer as evaluating every ladder point, and it says why."""

from dataclasses import replace

import pytest

from engine.knee import (
    NO_PREEMPTION,
    SLO,
    Bound,
    CliffLimit,
    KneePoint,
    Objective,
    _Search,
    find_knee,
    knee_on_grid,
    ladder,
)
from engine.perf import Calibration
from engine.scenario import Scenario
from engine.workload import request_lengths

# Small cases (one replica of a 24 GiB device, a few hundred reasoning requests: the cliff within a few dozen
# sequences) so an exhaustive ladder is affordable with the pure-Python loop.
SMALL = Scenario(gpu="custom", gpu_mem_gib=24.0, num_requests=160, max_num_seqs=160, max_model_len=32768)
CASES = [
    SMALL,
    replace(SMALL, gpu_mem_gib=30.0, workload="reasoning:0.5"),
    replace(SMALL, num_requests=240, dp=2, gpus=2, max_num_seqs=64),
    replace(SMALL, workload="fixed:512,2048", num_requests=120, gpu_mem_gib=20.0, max_model_len=4096),
]


def exhaustive(s: Scenario, tol: float, cliff: CliffLimit, slo: SLO) -> int | None:
    """The knee by definition: the smallest ladder value within ``tol`` of the best value that meets every limit."""
    lengths = request_lengths(s.workload, s.num_requests, s.seed)
    srch = _Search(s, Calibration(), slo, cliff, lengths)
    pts = [srch.point(v) for v in ladder(srch.cap)]
    ok = [p for p in pts if p.meets]
    if not ok:
        return None
    top = max(p.generation_tokens_per_s or 0.0 for p in ok)
    return min(p.max_num_seqs for p in ok if (p.generation_tokens_per_s or 0.0) >= top * (1 - tol))


def test_ladder_is_half_octaves_up_to_the_cap() -> None:
    assert ladder(100) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 100]
    assert ladder(1) == [1]
    assert ladder(10**9)[-1] == 16384


@pytest.mark.parametrize("s", CASES, ids=["24GiB", "30GiB-half", "dp2", "fixed"])
@pytest.mark.parametrize("cliff", [CliffLimit(), NO_PREEMPTION], ids=["free", "no-preemption"])
def test_bisection_finds_the_exhaustive_knee_with_fewer_predictions(s: Scenario, cliff: CliffLimit) -> None:
    knee = find_knee(s, cliff=cliff)
    assert knee.recommended.max_num_seqs == exhaustive(s, knee.tolerance, cliff, SLO())
    assert knee.best.meets
    assert knee.predictions < len(ladder(knee.points[-1].max_num_seqs)) - 2
    assert knee.predictions <= len(knee.points)  # points proven identical to a predicted one cost nothing
    assert knee.calibration == "defaults"
    if cliff is NO_PREEMPTION:
        assert knee.best.preemptions == 0


def test_no_preemption_is_bounded_by_the_cliff_and_says_so() -> None:
    knee = find_knee(SMALL, cliff=NO_PREEMPTION)
    assert knee.bound is Bound.CLIFF, knee.why
    grid = ladder(SMALL.num_requests)
    above = next(p for p in knee.points if p.max_num_seqs == grid[grid.index(knee.best.max_num_seqs) + 1])
    assert above.preemptions and above.preemptions > 0
    assert f"{above.preemptions:,} preemption" in knee.why


def test_tpot_slo_caps_the_setting_and_ttft_slo_floors_it() -> None:
    free = find_knee(SMALL)
    tpot = (free.best.tpot_mean_s or 0.0) * 0.9  # tighter than the free knee gives
    capped = find_knee(SMALL, slo=SLO(tpot_mean_s=tpot))
    assert capped.best.max_num_seqs < free.best.max_num_seqs
    assert (capped.best.tpot_mean_s or 1.0) <= tpot
    assert capped.bound is Bound.SLO and "TPOT mean" in capped.why
    assert capped.recommended.max_num_seqs == exhaustive(SMALL, 0.01, CliffLimit(), SLO(tpot_mean_s=tpot))
    floored = find_knee(SMALL, slo=SLO(ttft_p99_s=free.best.ttft_p99_s))
    assert (floored.best.ttft_p99_s or 1e9) <= (free.best.ttft_p99_s or 0.0)


def test_impossible_limits_are_reported_not_hidden() -> None:
    knee = find_knee(SMALL, slo=SLO(tpot_mean_s=1e-6))
    assert knee.bound is Bound.INFEASIBLE and not knee.feasible
    assert "TPOT mean" in knee.why or "no max_num_seqs" in knee.why
    assert knee.recommended == SMALL  # nothing to recommend: the user's own setting is kept


def test_completion_objective_and_the_gain_over_the_users_setting() -> None:
    s = replace(SMALL, max_num_seqs=2)
    knee = find_knee(s, objective=Objective.COMPLETION)
    assert knee.current.max_num_seqs == 2
    assert knee.gain is not None and knee.gain > 0.5  # two at a time is far below the knee
    assert knee.value == knee.best.completion_s
    d = knee.as_dict()
    assert d["recommended"]["max_num_seqs"] == knee.recommended.max_num_seqs  # type: ignore[index]
    assert d["predictions"] == knee.predictions and d["source"] == "predicted: engine.knee"
    assert all(isinstance(p, dict) for p in d["points"])  # type: ignore[union-attr]


def test_other_settings_tuned_on_request() -> None:
    knee = find_knee(SMALL, tune=("max_num_seqs", "max_num_batched_tokens"))
    mnbts = {p.max_num_batched_tokens for p in knee.points}
    assert len(mnbts) > 1
    assert knee.recommended.max_num_batched_tokens in mnbts
    with pytest.raises(ValueError, match="tune"):
        find_knee(SMALL, tune=("block_size",))
    with pytest.raises(ValueError, match="tolerance"):
        find_knee(SMALL, tolerance=1.5)


def test_a_cap_that_never_binds_is_not_predicted_twice() -> None:
    s = replace(SMALL, gpu_mem_gib=141.0, num_requests=40)  # everything fits: the knee is the whole batch
    knee = find_knee(s)
    assert knee.bound is Bound.BATCH and knee.best.max_num_seqs == 40
    assert knee.predictions <= 3  # the top, its neighbour below, and the user's own setting
    assert all(isinstance(p, KneePoint) for p in knee.points)


@pytest.mark.parametrize("s", CASES[:2] + CASES[3:], ids=["24GiB", "30GiB-half", "fixed"])
def test_knee_on_a_sweep_grid_is_the_last_calm_grid_value(s: Scenario) -> None:
    """The knee a measured sweep is compared with (the last setting without preemption), predicted on the sweep's own
    grid — values the half-octave ladder skips included — by bisection, equal to predicting every grid value."""
    grid = list(range(2, 41, 3))  # 2, 5, 8, …: mostly off the ladder
    found = knee_on_grid(s, grid, also=(11,))
    lengths = request_lengths(s.workload, s.num_requests, s.seed)
    srch = _Search(s, Calibration(), SLO(), NO_PREEMPTION, lengths)
    calm = [v for v in grid if srch.point(v).runnable and not srch.point(v).preemptions]
    assert found.last_calm == (calm[-1] if calm else None)
    assert found.predictions < len(grid)
    assert found.point(11) is not None and found.highest_throughput([11]) == 11
    if found.last_calm is not None and found.last_calm != grid[-1]:
        after = found.point(grid[grid.index(found.last_calm) + 1])
        assert after is not None and after.preemptions


def test_knee_on_grid_refuses_an_empty_grid() -> None:
    with pytest.raises(ValueError, match="grid"):
        knee_on_grid(SMALL, [])
