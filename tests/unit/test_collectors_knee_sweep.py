"""Knee-bounded sweeps: which points are planned around the predicted knee, and the sweep field / errors."""

from pathlib import Path

import pytest

from collectors.knee_sweep import choose_points, plan_around_knee
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
    assert plan.predicted_knee is not None and 2 <= plan.predicted_knee <= 16
    assert len(plan.planned) * 2 <= len(plan.grid)
    assert plan.predicted_knee in plan.planned or any(abs(v - plan.predicted_knee) <= 2 for v in plan.planned)
    assert plan.predictions > 0


def test_only_a_max_num_seqs_axis_can_be_bounded(tmp_path: Path) -> None:
    base = {"model": "tiny-llama-4l", "workload": "fixed:32,256", "kv_cache_memory_bytes": 4 << 20}
    sweep = sweep_from_mapping({"sweep": {"name": "x"}, "base": base, "axes": {"num_requests": [8, 16]}}, "t")
    with pytest.raises(SpecError, match="max_num_seqs as the only axis"):
        plan_around_knee(sweep, None)
    with pytest.raises(SpecError, match="around_knee must be true or false"):
        sweep_from_mapping({"sweep": {"name": "x", "around_knee": "yes"}, "base": base}, "t")
