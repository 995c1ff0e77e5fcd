"""Error of a prediction against a measurement, per series, on the measured time grid.

Why on the measured grid: the measurement is the truth we have, sampled where the collector sampled; the prediction
is a smooth function we can evaluate anywhere, so it is interpolated onto the measured times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SeriesError:
    """How far a predicted series is from a measured one.

    ``mae`` is in the series' own unit; ``relative`` is mae over the mean magnitude of the measurement (0..∞).
    """

    mae: float
    relative: float | None
    points: int

    def describe(self, unit: str, *, as_percent_points: bool = False) -> str:
        if self.points == 0:
            return "no overlap to compare"
        if as_percent_points:
            return f"error {self.mae * 100:.1f} pp"
        rel = f" ({self.relative * 100:.0f} %)" if self.relative is not None else ""
        return f"error {self.mae:.3g} {unit}{rel}".replace("  ", " ")


def series_error(
    measured_t_s: np.ndarray, measured_y: np.ndarray, predicted_t_s: np.ndarray, predicted_y: np.ndarray
) -> SeriesError:
    """Mean absolute error of predicted vs measured over the measured samples within both time ranges.

    After the prediction ends, the predicted value is held at its last value (the batch is done there, so the
    series is flat), so a prediction that finishes too early is charged for it.
    """
    mt = np.asarray(measured_t_s, dtype=float)
    my = np.asarray(measured_y, dtype=float)
    pt = np.asarray(predicted_t_s, dtype=float)
    py = np.asarray(predicted_y, dtype=float)
    keep = np.isfinite(mt) & np.isfinite(my)
    mt, my = mt[keep], my[keep]
    pkeep = np.isfinite(pt) & np.isfinite(py)
    pt, py = pt[pkeep], py[pkeep]
    if mt.size == 0 or pt.size == 0:
        return SeriesError(mae=float("nan"), relative=None, points=0)
    order = np.argsort(pt)
    estimate = np.interp(mt, pt[order], py[order])
    mae = float(np.mean(np.abs(estimate - my)))
    scale = float(np.mean(np.abs(my)))
    return SeriesError(mae=mae, relative=(mae / scale) if scale > 0 else None, points=int(mt.size))


def relative_difference(predicted: float | None, measured: float | None) -> float | None:
    """(predicted − measured) / measured, or None when either is missing or the measurement is zero."""
    if predicted is None or measured is None:
        return None
    if not (np.isfinite(predicted) and np.isfinite(measured)) or measured == 0:
        return None
    return (predicted - measured) / measured
