"""Is the predicted knee where the measured one is? Per sweep family of measured runs, along the setting it sweeps.

A family is the runs of one sweep (``collector.sweep.name``) that differ in exactly one of max_num_seqs, the KV pool
(kv_cache_memory_bytes) or the batch (num_requests). Two knees each side, as the issue defines them:

- ``throughput``: the setting of highest generation throughput;
- ``no-preemption``: the last setting, in the order that adds KV pressure (more sequences, a smaller pool, a larger
  batch), at which the run did not preempt.

The predicted side uses the validation report's figures (engine.fidelity.report: every run predicted with a
calibration fitted *without* it), so no fit ever saw the run it is scored on. The error is in grid steps of the
family's own settings (0: the same setting). For max_num_seqs families the engine's own search (engine.knee) also
runs on the family's scenario with the uncalibrated host prior, to show where it lands between the measured points.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

AXES = ("max_num_seqs", "kv_cache_memory_bytes", "num_requests")
PRESSURE_UP = {"max_num_seqs": True, "kv_cache_memory_bytes": False, "num_requests": True}


@dataclass(frozen=True)
class FamilyKnee:
    family: str
    axis: str
    settings: tuple[int, ...]  # in the order that adds KV pressure
    definition: str  # "throughput" | "no-preemption"
    measured: int | None  # the measured knee's setting (None: every setting preempts)
    predicted: int | None
    steps_off: int | None  # grid steps between them (None when either side has no knee)
    run_ids: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _family_of(meta: dict[str, Any]) -> str | None:
    sweep = (meta.get("collector") or {}).get("sweep") or {}
    return sweep.get("name") if isinstance(sweep, dict) else None


def _axis(rows: Sequence[dict[str, Any]]) -> str | None:
    """The one setting that varies across the family (None: none or several do)."""
    varying = [a for a in AXES if len({r.get(a) for r in rows}) > 1]
    others = {(r.get("workload"), r.get("layout"), r.get("model")) for r in rows}
    return varying[0] if len(varying) == 1 and len(others) == 1 else None


def _knee(rows: list[dict[str, Any]], side: str, definition: str) -> int | None:
    """Index (into rows, pressure order) of one side's knee."""
    if definition == "throughput":
        values = [r["figures"]["generation_tokens_per_s"][side] for r in rows]
        if any(v is None for v in values):
            return None
        return max(range(len(rows)), key=lambda i: values[i])
    calm = [i for i, r in enumerate(rows) if (r["figures"]["preemptions"][side] or 0) == 0]
    return calm[-1] if calm else None


def family_knees(
    rows: Sequence[dict[str, Any]], metas: dict[str, dict[str, Any]]
) -> tuple[list[FamilyKnee], list[str]]:
    """Knees of every family with ≥ 3 settings along one axis; and why each other family was left out."""
    families: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        name = _family_of(metas.get(r["run_id"], {}))
        if name:
            families.setdefault(name, []).append(r)
    out, skipped = [], []
    for name, members in sorted(families.items()):
        axis = _axis(members)
        if axis is None:
            varying = [a for a in (*AXES, "layout", "workload", "model") if len({r.get(a) for r in members}) > 1]
            skipped.append(
                f"{name}: its runs vary in {', '.join(varying) or 'nothing'}, not in one of {', '.join(AXES)}"
            )
            continue
        if len({r[axis] for r in members}) < 3:
            skipped.append(f"{name}: {len(members)} settings of {axis} — a knee needs at least three")
            continue
        ordered = sorted(members, key=lambda r: r[axis], reverse=not PRESSURE_UP[axis])
        settings = tuple(int(r[axis]) for r in ordered)
        for definition in ("throughput", "no-preemption"):
            m, p = _knee(ordered, "measured", definition), _knee(ordered, "predicted", definition)
            out.append(FamilyKnee(
                name, axis, settings, definition, settings[m] if m is not None else None,
                settings[p] if p is not None else None, abs(m - p) if m is not None and p is not None else None,
                tuple(r["run_id"] for r in ordered),
            ))  # fmt: skip
    return out, skipped


def knee_error_stats(knees: Sequence[FamilyKnee]) -> dict[str, float | int | None]:
    """Median, mean and worst grid steps off, over the family knees both sides have; and the exact-hit count."""
    off = [k.steps_off for k in knees if k.steps_off is not None]
    return {
        "knees": len(off),
        "exact": sum(1 for s in off if s == 0),
        "within_one_step": sum(1 for s in off if s <= 1),
        "median_steps": statistics.median(off) if off else None,
        "mean_steps": statistics.fmean(off) if off else None,
        "worst_steps": max(off) if off else None,
    }


@dataclass(frozen=True)
class SearchedKnee:
    """The engine's own knee search (engine.knee) on a max_num_seqs family, against the measured knee."""

    family: str
    definition: str
    searched: int | None  # the engine's recommended max_num_seqs (None: none meets the limit)
    measured_setting_below: int | None  # the family's largest setting at or below it (its grid cell)
    measured: int | None
    steps_off: int | None
    predictions: int
    seconds: float
    calibration: str

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def searched_knees(knees: Sequence[FamilyKnee], cases: dict[str, Any]) -> list[SearchedKnee]:
    """For each max_num_seqs family, run the knee search on its scenario with the run's own request list, prefix
    caching as the runs had it, and the uncalibrated host prior (no fit has seen any run)."""
    from engine.knee import NO_PREEMPTION, CliffLimit, Objective, find_knee

    out = []
    for k in knees:
        case = next((cases[r] for r in k.run_ids if r in cases), None)
        if k.axis != "max_num_seqs" or case is None:
            continue
        cliff = NO_PREEMPTION if k.definition == "no-preemption" else CliffLimit()
        found = find_knee(case.scenario, Objective.THROUGHPUT, cliff=cliff, requests=case.lengths,
                          prefix_caching=case.prefix_caching)  # fmt: skip
        searched = found.recommended.max_num_seqs if found.feasible else None
        below = [v for v in k.settings if searched is not None and v <= searched]
        nearest = max(below) if below else None
        steps = None
        if nearest is not None and k.measured is not None:  # 0: the search lands in the measured knee's grid cell
            steps = abs(k.settings.index(nearest) - k.settings.index(k.measured))
        out.append(SearchedKnee(k.family, k.definition, searched, nearest, k.measured, steps, found.predictions,
                                found.seconds, found.calibration))  # fmt: skip
    return out
