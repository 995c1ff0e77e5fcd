"""The knee: the ``max_num_seqs`` (and, on request, ``max_num_batched_tokens`` / ``gpu_memory_utilization``) that
stops short of the cliff — the setting a user can act on where the paper only advises "a KV-aware concurrency cap"
(Observation 1) and "the batch size where TTFT reduction no longer compensates for TPOT degradation" (Observation 2).

What is searched: a half-octave ladder of ``max_num_seqs`` (1, 2, 3, 4, 6, 8, 12, …: powers of two and 1.5× each)
up to the requests one replica can hold at once (a cap above that never binds), every point a full prediction of the
scenario. The recommendation is the *smallest* setting whose objective (generation throughput, or completion time)
is within ``tolerance`` of the best one that meets the constraints — a knee, not a peak: on the engine's own
predictions for the paper's 32B model on DP=8, max_num_seqs 64…2,048 all finish within 2 % of each other
(751–769 s) while preemptions grow from 493 to 2,755, so the peak alone says nothing useful.

Why it is cheap: the constraints are monotone in ``max_num_seqs`` in the engine's runs (more running sequences:
more KV in use, so the cliff limit and the TPOT / E2E SLOs bound it from above; less queueing, so the TTFT SLO bounds
it from below), so each is bisected over the ladder; throughput rises to a plateau, so the best point is found by a
bisection on its slope and the knee by a bisection for the first point within tolerance. Every prediction is cached
and counted; the chosen point is re-checked against every constraint and, should a monotone assumption not hold, the
remaining ladder points are evaluated rather than a wrong answer returned.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from engine.perf import Calibration
from engine.scenario import FIELD_RANGES, Scenario
from engine.simulate import SimulationError, predict
from engine.workload import request_lengths


class Objective(Enum):
    THROUGHPUT = "throughput"  # maximise generation tokens/s
    COMPLETION = "completion"  # minimise the batch's completion time


class Bound(Enum):
    """What stops the recommendation from going higher (vocabulary of the memory / step model)."""

    KV_CAPACITY = "kv-capacity"  # above it vLLM preempts and recomputes, and throughput no longer gains
    BANDWIDTH = "bandwidth"  # step time grows with the batch as fast as the batch: HBM streaming saturates
    COMPUTE = "compute"  # prefill GEMMs saturate the device
    COMMUNICATION = "communication"  # TP all-reduce / PP hand-offs dominate
    CLIFF = "cliff"  # the user's cliff limit (no preemption, or at most N % of the run preempting)
    SLO = "slo"  # a latency SLO (TPOT, E2E p99) would be broken above it
    BATCH = "batch"  # every request of a replica already runs at once: a higher cap changes nothing
    INFEASIBLE = "infeasible"  # no setting meets the constraints


@dataclass(frozen=True)
class SLO:
    """Latency limits a recommended setting must meet (seconds; None: no limit)."""

    ttft_p99_s: float | None = None
    tpot_mean_s: float | None = None
    e2e_p99_s: float | None = None

    def is_set(self) -> bool:
        return any(v is not None for v in (self.ttft_p99_s, self.tpot_mean_s, self.e2e_p99_s))

    def describe(self) -> str:
        parts = [
            f"{name} ≤ {_fmt_s(v)}"
            for name, v in (("TTFT p99", self.ttft_p99_s), ("TPOT mean", self.tpot_mean_s), ("E2E p99", self.e2e_p99_s))
            if v is not None
        ]
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class CliffLimit:
    """The cliff as a constraint: ``max_preempting_share`` None = no limit, 0 = no preemption at all, 0.05 = vLLM
    may be preempting during at most 5 % of the run's time (the predicted timeline's bins with new preemptions)."""

    max_preempting_share: float | None = None

    def describe(self) -> str:
        if self.max_preempting_share is None:
            return "none"
        if self.max_preempting_share == 0:
            return "no preemption"
        return f"preempting during at most {self.max_preempting_share:.0%} of the run"


NO_PREEMPTION = CliffLimit(0.0)


@dataclass(frozen=True)
class KneePoint:
    """One evaluated setting and its predicted figures."""

    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float
    completion_s: float | None
    generation_tokens_per_s: float | None
    ttft_p99_s: float | None
    tpot_mean_s: float | None
    e2e_p99_s: float | None
    preemptions: int | None
    preempting_share: float | None  # share of the run's time with new preemptions
    peak_running: int | None
    bound_regime: str
    violations: tuple[str, ...] = ()  # constraints this setting breaks (or why it cannot run)
    runnable: bool = True

    @property
    def meets(self) -> bool:
        return self.runnable and not self.violations

    def objective(self, objective: Objective) -> float:
        """Larger is better for both objectives (completion time is negated); -inf when it cannot run."""
        if not self.runnable:
            return -math.inf
        if objective is Objective.THROUGHPUT:
            return float(self.generation_tokens_per_s or 0.0)
        return -float(self.completion_s or math.inf)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["violations"] = list(self.violations)
        out["meets_constraints"] = self.meets
        return out


@dataclass(frozen=True)
class Knee:
    """A knee search's answer: the recommended setting, why, and every point it predicted."""

    scenario: Scenario  # as given (the user's own setting)
    recommended: Scenario  # the scenario with the recommended setting
    objective: Objective
    best: KneePoint  # the recommended setting's predicted figures
    current: KneePoint  # the user's own setting, predicted the same way
    bound: Bound
    why: str
    slo: SLO
    cliff: CliffLimit
    points: tuple[KneePoint, ...]  # every evaluated setting, ordered by the settings
    predictions: int  # simulations actually run (cache hits and settings proven identical excluded)
    seconds: float
    calibration: str
    tolerance: float

    @property
    def feasible(self) -> bool:
        return self.bound is not Bound.INFEASIBLE

    @property
    def value(self) -> float | None:
        """The objective at the recommendation, in its own unit (tokens/s or s)."""
        if self.objective is Objective.THROUGHPUT:
            return self.best.generation_tokens_per_s
        return self.best.completion_s

    @property
    def gain(self) -> float | None:
        """Relative improvement of the objective over the user's own setting (0.25 = 25 % better)."""
        a, b = self.best, self.current
        if not (a.runnable and b.runnable):
            return None
        if self.objective is Objective.THROUGHPUT:
            base = b.generation_tokens_per_s or 0.0
            return (a.generation_tokens_per_s or 0.0) / base - 1.0 if base > 0 else None
        if not a.completion_s:
            return None
        return (b.completion_s or 0.0) / a.completion_s - 1.0

    def as_dict(self) -> dict[str, object]:
        return {
            "recommended": {
                "max_num_seqs": self.recommended.max_num_seqs,
                "max_num_batched_tokens": self.recommended.max_num_batched_tokens,
                "gpu_memory_utilization": self.recommended.gpu_memory_utilization,
            },
            "current": self.current.as_dict(),
            "best": self.best.as_dict(),
            "objective": self.objective.value,
            "objective_value": self.value,
            "gain_over_current": self.gain,
            "bound": self.bound.value,
            "why": self.why,
            "slo": {
                "ttft_p99_s": self.slo.ttft_p99_s,
                "tpot_mean_s": self.slo.tpot_mean_s,
                "e2e_p99_s": self.slo.e2e_p99_s,
            },
            "cliff_limit": self.cliff.max_preempting_share,
            "tolerance": self.tolerance,
            "predictions": self.predictions,
            "seconds": self.seconds,
            "calibration": self.calibration,
            "points": [p.as_dict() for p in self.points],
            "source": "predicted: engine.knee",
        }


def _fmt_s(v: float) -> str:
    return f"{v * 1000:,.0f} ms" if v < 1 else f"{v:,.1f} s"


def ladder(cap: int) -> list[int]:
    """Half-octave ladder 1, 2, 3, 4, 6, 8, 12, … up to ``cap`` (included): a 1.5× step is finer than the 2× the
    paper sweeps (64…1,024) yet keeps a full search to ~28 points up to 16,384."""
    top = min(max(cap, 1), int(FIELD_RANGES["max_num_seqs"]["max"]))
    values = {1}
    p = 1
    while p <= top:
        values.update(v for v in (p, p + p // 2) if v <= top)
        p *= 2
    values.add(top)
    return sorted(values)


@dataclass
class _Search:
    """Predictions of one base scenario over settings, cached and counted."""

    base: Scenario
    cal: Calibration
    slo: SLO
    cliff: CliffLimit
    lengths: np.ndarray
    prefix_caching: bool = True
    cache: dict[tuple[int, int, float], KneePoint] = field(default_factory=dict)
    predictions: int = 0

    def point(self, mns: int, mnbt: int | None = None, gmu: float | None = None) -> KneePoint:
        key = (mns, mnbt or self.base.max_num_batched_tokens, gmu or self.base.gpu_memory_utilization)
        if key not in self.cache:
            self.cache[key] = self._predict(*key)
            self._share_identical(key)
        return self.cache[key]

    def _share_identical(self, key: tuple[int, int, float]) -> None:
        """A single replica whose peak running count stayed below its cap never hit the cap: every higher cap gives
        the same run, so those ladder points are known without a prediction."""
        p = self.cache[key]
        if self.base.dp != 1 or not p.runnable or p.peak_running is None or p.peak_running >= key[0]:
            return
        for v in ladder(self.cap):
            if v > key[0] and (v, key[1], key[2]) not in self.cache:
                self.cache[(v, key[1], key[2])] = replace(p, max_num_seqs=v)

    @property
    def cap(self) -> int:
        return -(-len(self.lengths) // max(self.base.dp, 1))

    def _predict(self, mns: int, mnbt: int, gmu: float) -> KneePoint:
        s = replace(self.base, max_num_seqs=mns, max_num_batched_tokens=mnbt, gpu_memory_utilization=gmu)
        try:
            pred = predict(s, requests=self.lengths, calibration=self.cal, prefix_caching=self.prefix_caching)
        except SimulationError as exc:
            return KneePoint(mns, mnbt, gmu, None, None, None, None, None, None, None, None, "", (str(exc),), False)
        finally:
            self.predictions += 1
        sm = pred.summary
        new = np.diff(pred.timeline["preemptions_total"].to_numpy(), prepend=0) > 0
        share = float(new.mean()) if len(new) else 0.0
        p = KneePoint(
            mns, mnbt, gmu, float(sm.completion_s), float(sm.generation_tokens_per_s), sm.ttft_p99_s,
            sm.tpot_mean_s, sm.e2e_p99_s, int(sm.preemptions), share, int(sm.peak_running), str(sm.bound_regime),
        )  # fmt: skip
        return replace(p, violations=self._violations(p))

    def _violations(self, p: KneePoint) -> tuple[str, ...]:
        out = []
        limit = self.cliff.max_preempting_share
        if limit is not None and (p.preempting_share or 0.0) > limit:
            out.append(f"cliff: {p.preemptions:,} preemption{'s' if p.preemptions != 1 else ''}" if limit == 0 else
                       f"cliff: preempting during {p.preempting_share:.0%} of the run > {limit:.0%}")  # fmt: skip
        for name, value, lim in (
            ("TTFT p99", p.ttft_p99_s, self.slo.ttft_p99_s),
            ("TPOT mean", p.tpot_mean_s, self.slo.tpot_mean_s),
            ("E2E p99", p.e2e_p99_s, self.slo.e2e_p99_s),
        ):
            if lim is not None and (value is None or value > lim):
                out.append(f"SLO: {name} {_fmt_s(value) if value is not None else '—'} > {_fmt_s(lim)}")
        return tuple(out)


def _upper_ok(p: KneePoint) -> bool:
    """Constraints that a higher max_num_seqs makes harder: the cliff, TPOT, E2E (and running at all)."""
    return p.runnable and not any(v.startswith(("cliff", "SLO: TPOT", "SLO: E2E")) for v in p.violations)


def _lower_ok(p: KneePoint) -> bool:
    """The constraint a higher max_num_seqs makes easier: TTFT (less queueing before the first token)."""
    return not any(v.startswith("SLO: TTFT") for v in p.violations)


def _last_true(lo: int, hi: int, test) -> int:  # type: ignore[no-untyped-def]
    """Largest i in [lo, hi] with test(i) true, assuming true…true false…false; lo - 1 when none. Gallops down from
    ``hi`` (see ``_first_true_below`` for why the top of the ladder is where to look first)."""
    if test(hi):
        return hi
    bad, step = hi, 1
    while bad - step >= lo and not test(bad - step):
        bad -= step
        step *= 2
    good = max(bad - step, lo - 1)  # test(good) true, or virtual below lo
    while bad - good > 1:
        m = (good + bad) // 2
        if test(m):
            good = m
        else:
            bad = m
    return good


def _first_true_below(lo: int, hi: int, test) -> int:  # type: ignore[no-untyped-def]
    """Smallest i in [lo, hi] with test(i) true, assuming false…false true…true and test(hi) true. Gallops down from
    ``hi`` before bisecting: a prediction costs about 1/max_num_seqs (a cap of 1 runs 2,000 requests one by one,
    seconds; 256 runs them in tens of ms), so the search stays near the top of the ladder when it can."""
    good, step = hi, 1
    while good - step >= lo and test(good - step):
        good -= step
        step *= 2
    bad = good - step  # test(bad) false, or bad < lo
    bad = max(bad, lo - 1)
    while good - bad > 1:  # test(bad) false (or virtual), test(good) true
        m = (good + bad) // 2
        if test(m):
            good = m
        else:
            bad = m
    return good


def _search_seqs(srch: _Search, grid: list[int], objective: Objective, tol: float, **at: object) -> int | None:
    """Index into ``grid`` of the knee for fixed other settings; None when no setting meets the constraints."""

    def pt(i: int) -> KneePoint:
        return srch.point(grid[i], **at)  # type: ignore[arg-type]

    n = len(grid)
    hi = _last_true(0, n - 1, lambda i: _upper_ok(pt(i)))
    if hi < 0:
        return None
    lo = 0
    if srch.slo.ttft_p99_s is not None:  # the only constraint that bounds max_num_seqs from below
        if not _lower_ok(pt(hi)):
            return None
        lo = _first_true_below(0, hi, lambda i: _lower_ok(pt(i)))
    # Below the cliff (no preemption) throughput only rises with max_num_seqs, so that region's best is its top, c.
    # Above it recompute makes throughput erratic (it dips right past the cliff, then may recover as the cap stops
    # binding): its plateau is found from the top and its first point is checked as well.
    c = _last_true(lo, hi, lambda i: not pt(i).preemptions)
    peak = hi
    if c < hi:
        peak = _first_true_below(
            c + 1, hi, lambda i: i == hi or pt(i + 1).objective(objective) <= pt(i).objective(objective)
        )
        pt(c + 1)
    best = max(
        (i for i in range(lo, hi + 1) if (grid[i], *_key_rest(srch, at)) in srch.cache and pt(i).meets),
        key=lambda i: pt(i).objective(objective),
        default=peak,
    )
    target = pt(best).objective(objective)
    target -= abs(target) * tol
    if c >= lo and pt(c).objective(objective) >= target:
        knee = _first_true_below(lo, c, lambda i: pt(i).objective(objective) >= target)
    else:
        knee = _first_true_below(max(c + 1, lo), best, lambda i: pt(i).objective(objective) >= target)
    if not pt(knee).meets:  # a monotone assumption failed here: evaluate the rest of the ladder instead
        ok = [i for i in range(n) if pt(i).meets]
        if not ok:
            return None
        top = max(pt(i).objective(objective) for i in ok)
        knee = min(i for i in ok if pt(i).objective(objective) >= top - abs(top) * tol)
    return knee


def _key_rest(srch: _Search, at: dict[str, object]) -> tuple[int, float]:
    return (
        int(at.get("mnbt") or srch.base.max_num_batched_tokens),  # type: ignore[call-overload]
        float(at.get("gmu") or srch.base.gpu_memory_utilization),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class GridKnee:
    """The knee as the issue defines the *measured* one, predicted on a sweep's own grid of max_num_seqs values:
    ``last_calm`` is the last setting without predicted preemption, and ``highest_throughput`` the setting of highest
    predicted generation throughput among the settings asked for.

    Why not ``find_knee``'s recommendation: that is the *smallest* setting within ``tolerance`` of the best one on
    the half-octave ladder (1, 2, 3, 4, 6, 8, …) — a tie-break towards the lower setting, right for advice and wrong
    for a comparison with a measured knee. On the CPU preset cpu-iv-a-knee, priced with the sweep host's own
    profile, the predicted throughput rises only 1.2 % from max_num_seqs 4 to 7 and preemption starts at 8; the
    recommendation is 4 (6 is only 1.0 % better), the last calm ladder point 6, the last calm grid point 7."""

    grid: tuple[int, ...]  # ascending
    last_calm: int | None  # None: every setting is predicted to preempt (or cannot run)
    points: tuple[KneePoint, ...]  # every setting predicted, ascending
    predictions: int
    seconds: float
    calibration: str

    def point(self, max_num_seqs: int) -> KneePoint | None:
        return next((p for p in self.points if p.max_num_seqs == max_num_seqs), None)

    def highest_throughput(self, among: Sequence[int]) -> int | None:
        """Of the settings ``among`` (all predicted), the one of highest predicted generation throughput."""
        pts = [p for v in among if (p := self.point(v)) is not None and p.runnable]
        return max(pts, key=lambda p: p.objective(Objective.THROUGHPUT)).max_num_seqs if pts else None


def knee_on_grid(
    scenario: Scenario,
    grid: Sequence[int],
    calibration: object | None = None,
    requests: np.ndarray | None = None,
    prefix_caching: bool = True,
    also: Sequence[int] = (),
) -> GridKnee:
    """Bisect ``grid`` for the last setting without predicted preemption (more running sequences only add KV
    pressure, so preemption is monotone in max_num_seqs on a batch; the answer is re-checked: it is calm and its
    successor is not) and predict the settings in ``also`` too (e.g. the ones a sweep measured)."""
    values = sorted({int(v) for v in grid})
    if not values or values[0] < 1:
        raise ValueError(f"grid: {list(grid)!r} — give max_num_seqs values ≥ 1")
    t0 = time.perf_counter()
    cal = Calibration.from_object(calibration)
    lengths = requests if requests is not None else request_lengths(scenario.workload, scenario.num_requests,
                                                                     scenario.seed)  # fmt: skip
    srch = _Search(scenario, cal, SLO(), NO_PREEMPTION, np.asarray(lengths), prefix_caching)

    def calm(i: int) -> bool:
        p = srch.point(values[i])
        return p.runnable and not p.preemptions

    i = _last_true(0, len(values) - 1, calm)
    for v in also:
        srch.point(int(v))
    shown = set(values) | {int(v) for v in also}
    points = tuple(sorted((p for k, p in srch.cache.items() if k[0] in shown), key=lambda p: p.max_num_seqs))
    return GridKnee(tuple(values), values[i] if i >= 0 else None, points, srch.predictions,
                    time.perf_counter() - t0, cal.source)  # fmt: skip


TUNABLE = ("max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization")
# Values tried for the other settings when asked: vLLM's default token budget (8,192 in v1) halved and doubled, and
# memory fractions around its 0.9 default (above 0.95 the activation peak and CUDA graphs leave too little margin).
BATCHED_TOKENS = (2048, 4096, 8192, 16384, 32768)
MEMORY_UTILIZATION = (0.85, 0.9, 0.95)


def find_knee(
    scenario: Scenario,
    objective: Objective = Objective.THROUGHPUT,
    slo: SLO | None = None,
    cliff: CliffLimit | None = None,
    calibration: object | None = None,
    tolerance: float = 0.01,
    tune: Sequence[str] = ("max_num_seqs",),
    requests: np.ndarray | None = None,
    prefix_caching: bool = True,
) -> Knee:
    """The knee of one scenario (its layout as given). ``tune`` adds ``max_num_batched_tokens`` and/or
    ``gpu_memory_utilization``: each candidate value gets its own ``max_num_seqs`` search (predictions shared)."""
    unknown = set(tune) - set(TUNABLE)
    if unknown or "max_num_seqs" not in tune:
        raise ValueError(f"tune: {sorted(unknown) or tune!r} — choose among {', '.join(TUNABLE)} (max_num_seqs always)")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance: {tolerance} must be in [0, 1)")
    t0 = time.perf_counter()
    cal = Calibration.from_object(calibration)
    lengths = requests if requests is not None else request_lengths(scenario.workload, scenario.num_requests,
                                                                     scenario.seed)  # fmt: skip
    srch = _Search(scenario, cal, slo or SLO(), cliff or CliffLimit(), np.asarray(lengths), prefix_caching)
    grid = ladder(srch.cap)
    mnbts = BATCHED_TOKENS if "max_num_batched_tokens" in tune else (scenario.max_num_batched_tokens,)
    gmus = MEMORY_UTILIZATION if "gpu_memory_utilization" in tune else (scenario.gpu_memory_utilization,)
    found: list[KneePoint] = []
    for mnbt in mnbts:
        for gmu in gmus:
            i = _search_seqs(srch, grid, objective, tolerance, mnbt=mnbt, gmu=gmu)
            if i is not None:
                found.append(srch.point(grid[i], mnbt, gmu))
    current = srch.point(scenario.max_num_seqs)
    if found:
        top = max(p.objective(objective) for p in found)
        near = [p for p in found if p.objective(objective) >= top - abs(top) * tolerance]
        best = min(near, key=lambda p: (_distance(p, scenario), p.max_num_seqs))  # the user's other settings first
        bound, why = _explain(srch, grid, best, objective, tolerance)
    else:
        best, bound = current, Bound.INFEASIBLE
        why = f"no max_num_seqs up to {grid[-1]:,} meets the constraints (cliff: {srch.cliff.describe()}; SLO: " \
              f"{srch.slo.describe()})"  # fmt: skip
    recommended = replace(scenario, max_num_seqs=best.max_num_seqs, max_num_batched_tokens=best.max_num_batched_tokens,
                          gpu_memory_utilization=best.gpu_memory_utilization)  # fmt: skip
    points = tuple(sorted(srch.cache.values(), key=lambda p: (p.max_num_batched_tokens, p.gpu_memory_utilization,
                                                              p.max_num_seqs)))  # fmt: skip
    return Knee(scenario, recommended, objective, best, current, bound, why, srch.slo, srch.cliff, points,
                srch.predictions, time.perf_counter() - t0, cal.source, tolerance)  # fmt: skip


def _distance(p: KneePoint, s: Scenario) -> int:
    return int(p.max_num_batched_tokens != s.max_num_batched_tokens) + int(
        p.gpu_memory_utilization != s.gpu_memory_utilization
    )


def _change_text(best: KneePoint, nxt: KneePoint, objective: Objective, tol: float) -> str:
    """How the objective moves one ladder step up, in words: worse, or better by no more than the tolerance."""
    if objective is Objective.THROUGHPUT:
        a, b, metric = best.generation_tokens_per_s or 0.0, nxt.generation_tokens_per_s or 0.0, "throughput"
    else:
        a, b, metric = best.completion_s or 0.0, nxt.completion_s or 0.0, "completion time"
    change = b / a - 1 if a else 0.0
    better = change > 0 if objective is Objective.THROUGHPUT else change < 0
    text = f"at {nxt.max_num_seqs:,} {metric} {'rises' if change > 0 else 'falls'} by {abs(change):.1%}"
    return text + (f" (no more than the {tol:.0%} tolerance: not worth it)" if better else "")


def _explain(srch: _Search, grid: list[int], best: KneePoint, objective: Objective, tol: float) -> tuple[Bound, str]:
    """What stops the recommendation going higher: the next ladder point's prediction says (one more prediction at
    most)."""
    head = f"max_num_seqs {best.max_num_seqs:,}"
    i = grid.index(best.max_num_seqs)
    if i == len(grid) - 1 or (srch.base.dp == 1 and (best.peak_running or 0) < best.max_num_seqs):
        return Bound.BATCH, f"{head}: every request of a replica already runs at once; a higher cap changes nothing"
    nxt = srch.point(grid[i + 1], best.max_num_batched_tokens, best.gpu_memory_utilization)
    step = f"at {nxt.max_num_seqs:,}"
    cliff = [v for v in nxt.violations if v.startswith("cliff")]
    if cliff:
        return Bound.CLIFF, f"{head}: {step} the cliff limit ({srch.cliff.describe()}) breaks — {cliff[0][7:]}"
    slo = [v for v in nxt.violations if v.startswith("SLO")]
    if slo or not nxt.runnable:
        return Bound.SLO, f"{head}: {step} {slo[0][5:] if slo else nxt.violations[0]}"
    gained = _change_text(best, nxt, objective, tol)
    if (nxt.preemptions or 0) > (best.preemptions or 0):
        return Bound.KV_CAPACITY, (
            f"{head}: KV capacity — {step} vLLM preempts {nxt.preemptions:,} times and recomputes; {gained}"
        )
    regime = best.bound_regime.replace("-bound", "")
    bound = {"compute": Bound.COMPUTE, "communication": Bound.COMMUNICATION}.get(regime, Bound.BANDWIDTH)
    return bound, f"{head}: {bound.value}-bound — step time grows as fast as the batch; {gained}"


def _seconds(field_name: str, text: str) -> float:
    t = text.strip().lower()
    scale = 1e-3 if t.endswith("ms") else 1.0
    t = t.removesuffix("ms").removesuffix("s")
    try:
        value = float(t) * scale
    except ValueError:
        raise ValueError(f"{field_name}: {text!r} is not a duration; write e.g. 2s, 50ms or 0.05") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{field_name}: {text!r} must be a positive duration")
    return value


SLO_KEYS = {"ttft_p99": "ttft_p99_s", "tpot": "tpot_mean_s", "tpot_mean": "tpot_mean_s", "e2e_p99": "e2e_p99_s"}


def parse_slo(text: str | None) -> SLO:
    """``ttft_p99=2s,tpot=50ms,e2e_p99=900`` (seconds unless ``ms``) into an SLO; ValueError names the bad part."""
    if not text or not text.strip():
        return SLO()
    values: dict[str, float] = {}
    for part in text.split(","):
        key, sep, raw = part.partition("=")
        name = SLO_KEYS.get(key.strip().lower())
        if not sep or name is None:
            raise ValueError(f"slo: {part.strip()!r} — write KEY=VALUE with KEY one of {', '.join(SLO_KEYS)}")
        values[name] = _seconds(f"slo {key.strip()}", raw)
    return SLO(**values)


def parse_cliff(text: str | None) -> CliffLimit:
    """``none``, ``no-preemption`` (or ``0``), or a share of the run's time that may be preempting: ``5%``/``0.05``."""
    t = (text or "none").strip().lower()
    if t in ("none", ""):
        return CliffLimit()
    if t in ("no-preemption", "no_preemption", "0", "0%"):
        return NO_PREEMPTION
    try:
        share = float(t.removesuffix("%")) / (100 if t.endswith("%") else 1)
    except ValueError:
        share = -1.0
    if not 0 <= share <= 1:
        raise ValueError(f"cliff: {text!r} — write none, no-preemption, or a share of the run such as 5% or 0.05")
    return CliffLimit(share)
