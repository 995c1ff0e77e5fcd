"""Fidelity: how far the engine's predictions are from measured runs, and calibrating it from them (issue #6).

from engine.fidelity import validate, calibration_for
report = validate(store)                        # {"runs": [...], "summary": {...}}: held-out runs only
cal = calibration_for(store, run_meta)           # the stored calibration of that run's hardware, or defaults
predict(scenario, calibration=cal)               # the prediction's summary["calibration"] names it

runs       a measured run as a Scenario + device + its own request list (RunCase)
steps      one simulation per run in step units, re-timed per calibration in one numpy call
calibrate  log-space Nelder-Mead fit per (device, vLLM version), k-fold cross-validation
report     figures and series predicted vs measured, summary, regimes, over-saturation, misses
"""

from __future__ import annotations

from typing import Any

from engine.perf import Calibration


def calibration_from_record(record: dict[str, Any]) -> Calibration:
    """A stored calibration (Store.calibration / latest_calibration) as the engine's Calibration."""
    params = dict(record.get("params") or {})
    source = (
        f"calibration {record.get('calibration_id', '?')}: fit on {len(record.get('run_ids') or [])} run(s) of "
        f"{record.get('device_key')} / vLLM {record.get('vllm_version')} at {record.get('created_at')}"
        + (f"; {record['origin']}" if record.get("origin") else "")
    )
    return Calibration.from_object({**params, "source": source})


def calibration_for(store: Any, meta: dict[str, Any]) -> Calibration:
    """The newest stored calibration for a run's hardware and vLLM version; defaults when there is none.

    A calibration belongs to one device group: a run on other hardware always gets the defaults, so a fit never
    changes a prediction it does not apply to.
    """
    from engine.fidelity.runs import device_key

    record = store.latest_calibration(device_key(meta), str(meta.get("vllm_version") or "unknown"))
    return calibration_from_record(record) if record else Calibration()


def validate(store: Any, run_ids: list[str] | None = None, folds: int = 5) -> dict[str, Any]:
    """The validation report (see engine.fidelity.report.validate)."""
    from engine.fidelity.report import validate as _validate

    return _validate(store, run_ids, folds=folds)
