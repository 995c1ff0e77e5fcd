"""Knee fidelity per sweep family: the measured and predicted knees along the swept setting, in grid steps."""

from engine.knee_fidelity import family_knees, knee_error_stats


def row(run_id: str, seqs: int, thr_p: float, thr_m: float, pre_p: int, pre_m: int, pool: int = 4 << 20) -> dict:
    return {
        "run_id": run_id, "max_num_seqs": seqs, "kv_cache_memory_bytes": pool, "num_requests": 64,
        "workload": "fixed:32,256", "layout": "DP1·TP1·PP1", "model": "tiny-llama-4l",
        "figures": {"generation_tokens_per_s": {"predicted": thr_p, "measured": thr_m},
                    "preemptions": {"predicted": pre_p, "measured": pre_m}},
    }  # fmt: skip


def meta(family: str) -> dict:
    return {"collector": {"sweep": {"name": family}}}


def test_knees_along_max_num_seqs_and_their_error_in_grid_steps() -> None:
    rows = [row("a", 4, 850, 950, 0, 0), row("b", 8, 1480, 1470, 10, 10), row("c", 16, 1700, 1660, 96, 91),
            row("d", 64, 1680, 2050, 140, 139)]  # fmt: skip
    knees, skipped = family_knees(rows, {r["run_id"]: meta("seqs") for r in rows})
    assert not skipped
    by = {k.definition: k for k in knees}
    assert by["throughput"].settings == (4, 8, 16, 64)
    assert (by["throughput"].measured, by["throughput"].predicted, by["throughput"].steps_off) == (64, 16, 1)
    assert (by["no-preemption"].measured, by["no-preemption"].predicted, by["no-preemption"].steps_off) == (4, 4, 0)
    stats = knee_error_stats(knees)
    assert stats == {"knees": 2, "exact": 1, "within_one_step": 2, "median_steps": 0.5, "mean_steps": 0.5,
                     "worst_steps": 1}  # fmt: skip


def test_a_smaller_kv_pool_is_more_pressure_and_two_settings_are_no_knee() -> None:
    pools = [row(f"p{i}", 32, 1000 - i, 1000 - i, pre, pre, pool=mib << 20)
             for i, (mib, pre) in enumerate([(32, 0), (8, 97), (2, 181)])]  # fmt: skip
    pair = [row("x", 4, 1, 1, 0, 0), row("y", 8, 1, 1, 0, 0)]
    metas = {**{r["run_id"]: meta("pool") for r in pools}, **{r["run_id"]: meta("pair") for r in pair}}
    knees, skipped = family_knees(pools + pair, metas)
    assert {k.family for k in knees} == {"pool"}
    assert knees[0].settings == (32 << 20, 8 << 20, 2 << 20)  # more pressure to the right
    assert all(k.measured == 32 << 20 and k.steps_off == 0 for k in knees)
    assert any("pair" in s and "at least three" in s for s in skipped)
