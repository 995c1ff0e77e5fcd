"""Knee-bounded sweeps: which points are planned around the predicted knee, and the sweep field / errors."""

from pathlib import Path

import pytest

from collectors.knee_sweep import KneeSweepReport, choose_points, describe_outcome, plan_around_knee
from collectors.spec import SpecError
from collectors.sweep import load_sweep, resolve_sweep_path, sweep_from_mapping

GRID = [2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32, 48, 64]


def test_dense_around_the_knee_sparse_elsewhere() -> None:
    assert choose_points(GRID, 6) == [2, 4, 5, 6, 7, 8, 32]
    assert choose_points(GRID, 64) == [2, 48, 64]
    assert choose_points(GRID, None) == GRID[:7]  # nothing calm predicted: the low end


def test_the_cpu_preset_plans_at_most_half_the_plain_grid() -> None:
    sweep = load_sweep(resolve_sweep_path("cpu-iv-a-knee"))
    assert sweep.around_knee is True
    plan = plan_around_knee(sweep, None)  # the catalog's cpu-host prices the steps (no host measured)
    assert plan.grid == tuple(GRID)
    # The last grid value the engine predicts calm (the measured knee's definition, on the same grid): 7; the
    # preset's max_num_seqs 8 run preempts 10 times, measured and predicted alike.
    assert plan.predicted_knee == 7
    assert len(plan.planned) * 2 <= len(plan.grid)
    assert {6, 7, 8} <= set(plan.planned)  # the knee and both neighbours on the plain grid
    assert plan.predictions < len(plan.grid)


def test_outcome_names_both_knees_and_their_distance_in_grid_steps() -> None:
    sweep = load_sweep(resolve_sweep_path("cpu-iv-a-knee"))
    plan = plan_around_knee(sweep, None)
    out = KneeSweepReport(plan, measured={2: 0, 5: 0, 6: 0, 7: 0, 8: 10, 10: 25},
                          throughput={2: 144.0, 5: 238.0, 6: 239.4, 7: 240.0, 8: 236.0, 10: 230.0})  # fmt: skip
    assert out.measured_knee() == 7 and out.measured_throughput_knee() == 7
    assert out.grid_steps(4, 6) == 2 and out.grid_steps(3, 99) is None
    lines = describe_outcome(sweep, out, None)
    assert len(lines) == 1 + 6 + 2
    assert "last without preemption: measured 7, predicted 7 (on the plain grid), 0 grid step(s) apart" in lines[-2]
    assert lines[-1].startswith("knee, highest throughput among the measured points: measured 7, predicted ")


def test_only_a_max_num_seqs_axis_can_be_bounded(tmp_path: Path) -> None:
    base = {"model": "tiny-llama-4l", "workload": "fixed:32,256", "kv_cache_memory_bytes": 4 << 20}
    sweep = sweep_from_mapping({"sweep": {"name": "x"}, "base": base, "axes": {"num_requests": [8, 16]}}, "t")
    with pytest.raises(SpecError, match="max_num_seqs as the only axis"):
        plan_around_knee(sweep, None)
    with pytest.raises(SpecError, match="around_knee must be true or false"):
        sweep_from_mapping({"sweep": {"name": "x", "around_knee": "yes"}, "base": base}, "t")
