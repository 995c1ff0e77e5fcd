"""A run's summary: one record for the engine's predicted and the store's measured summaries.

Both sides key their summaries exactly like ``SUMMARY_KEYS``, so the dashboard and the fidelity report compare them
field by field. ``RunSummary`` is the typed record (a prediction's ``summary``); it also reads as a mapping of those
keys (``summary["completion_s"]``, ``.get``), so code comparing it with a measured summary (a dict from the store)
reads both alike. ``as_dict()`` gives the JSON form, keys in this order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

SUMMARY_KEYS = (
    "completion_s",
    "cliff_onset_s",
    "preemptions",
    "peak_running",
    "peak_kv_usage",
    "kv_capacity_tokens",
    "ttft_mean_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_mean_s",
    "tpot_p50_s",
    "tpot_p99_s",
    "e2e_mean_s",
    "e2e_p50_s",
    "e2e_p99_s",
    "queue_mean_s",
    "num_requests",
    "generated_tokens",
    "generation_tokens_per_s",
    "bound_regime",
)
PREDICTION_KEYS = ("time_fractions", "model", "calibration")  # a prediction's summary only
_LATENCY_KEYS = SUMMARY_KEYS[6:16]
# A prediction's JSON (``python -m engine predict --json``) has always listed the run-level figures first, then the
# latencies, then its own keys: kept, so its output does not change.
PREDICTED_ORDER = SUMMARY_KEYS[:6] + SUMMARY_KEYS[16:] + _LATENCY_KEYS + PREDICTION_KEYS


@dataclass(frozen=True)
class TimeFractions(Mapping[str, float]):
    """Shares of a prediction's busy time, read like a dict (``["compute"]``, ``dict(...)``). A frozen record, not a
    read-only view of a dict: the dashboard's ``st.cache_data`` pickles every prediction, and a mappingproxy cannot
    be pickled."""

    compute: float
    memory: float
    communication: float
    overhead: float

    def __getitem__(self, key: str) -> float:
        if key not in _SHARES:
            raise KeyError(key)
        return float(getattr(self, key))

    def __iter__(self) -> Iterator[str]:
        return iter(_SHARES)

    def __len__(self) -> int:
        return len(_SHARES)


_SHARES = ("compute", "memory", "communication", "overhead")


@dataclass(frozen=True)
class RunSummary(Mapping[str, Any]):
    """A run's summary figures (None: not known; a measured run may lack any of them). A prediction also carries
    where its busy time went (``time_fractions``: compute, memory, communication, overhead shares), its model's
    name and its calibration's source; a measured summary leaves those None, and its ``as_dict`` leaves them out."""

    completion_s: float | None = None
    cliff_onset_s: float | None = None
    preemptions: int | None = None
    peak_running: int | None = None
    peak_kv_usage: float | None = None
    kv_capacity_tokens: int | None = None
    ttft_mean_s: float | None = None
    ttft_p50_s: float | None = None
    ttft_p99_s: float | None = None
    tpot_mean_s: float | None = None
    tpot_p50_s: float | None = None
    tpot_p99_s: float | None = None
    e2e_mean_s: float | None = None
    e2e_p50_s: float | None = None
    e2e_p99_s: float | None = None
    queue_mean_s: float | None = None
    num_requests: int | None = None
    generated_tokens: int | None = None
    generation_tokens_per_s: float | None = None
    bound_regime: str | None = None
    time_fractions: TimeFractions | None = None
    model: str | None = None
    calibration: str | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunSummary:
        """A summary from a mapping keyed like SUMMARY_KEYS (a measured summary from the store); unknown keys are
        an error naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"summary: unknown keys {unknown}; the keys are engine.summary.SUMMARY_KEYS")
        return cls(**values)

    def _keys(self) -> tuple[str, ...]:
        if self.time_fractions is None and self.model is None and self.calibration is None:
            return SUMMARY_KEYS
        return PREDICTED_ORDER

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: a measured summary's SUMMARY_KEYS in order, a prediction's in PREDICTED_ORDER
        (time_fractions as a plain dict)."""
        out = {k: getattr(self, k) for k in self._keys()}
        if out.get("time_fractions") is not None:
            out["time_fractions"] = dict(out["time_fractions"])
        return out

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())
