"""Request-length profiles: the list of (isl, osl) pairs that drives both a measured run and its prediction.

A profile is named by a short spec string so that it fits in a URL, a CLI flag and a run's metadata:

- ``reasoning`` — the paper's Natural Reasoning profile (§III-B): 77 % of prompts 50–150 tokens, very few above
  300; 45 % of outputs above 5,000 tokens. Both lengths are log-normal, fitted to those two statistics.
  Outputs are capped at 8,192 tokens (``REASONING_MAX_OSL``): the paper does not state its max_tokens, but its
  completion times (e.g. 2,000 requests of Qwen-14B in 332 s on 8×H200) are shorter than a 32k-token output
  could decode at any feasible per-token latency, while an 8k cap reproduces them (see docs/methods.md).
- ``reasoning:SCALE`` — the same shape with every length (and the cap) multiplied by SCALE (for tiny CPU models).
- ``reasoning:SCALE,MAX_OSL`` — the same with an explicit output cap (e.g. ``reasoning:1,32768`` for the long tail).
- ``fixed:ISL,OSL`` — every request the same.
- ``lognormal:ISL_MEDIAN,ISL_SIGMA,OSL_MEDIAN,OSL_SIGMA`` — a custom log-normal profile.
- a path to a ``.csv`` (columns ``isl,osl``) or ``.json`` (list of ``[isl, osl]`` or ``{"isl":..,"osl":..}``).

Draws use only ``Generator.standard_normal`` on a PCG64 stream, the most stable part of NumPy's random API, so a
seed gives the same list across NumPy versions. Measured runs also record their actual request list, which is what
predictions of a measured run use.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Fitted to §III-B: P(50 <= isl <= 150) = 0.77, P(isl > 300) ≈ 0.5 %; P(osl > 5000) = 0.45.
REASONING_ISL_MEDIAN = 95.0
REASONING_ISL_SIGMA = 0.45
REASONING_OSL_MEDIAN = 4465.0
REASONING_OSL_SIGMA = 0.9
REASONING_MAX_OSL = 8192  # inferred max_tokens of the paper's runs (module docstring)
MIN_LEN = 1
MAX_ISL = 8192
MAX_OSL = 32768


class WorkloadError(ValueError):
    """A workload spec that cannot be turned into a request list; the message names the fix."""


@dataclass(frozen=True)
class Workload:
    """A parsed profile spec. ``lengths(n, seed)`` gives the request list."""

    spec: str
    kind: str
    params: tuple[float, ...] = ()
    path: Path | None = None

    def lengths(self, num_requests: int, seed: int = 0) -> np.ndarray:
        """An (n, 2) int64 array of (isl, osl), deterministic for (spec, n, seed)."""
        if num_requests < 1:
            raise WorkloadError(f"num_requests must be at least 1, got {num_requests}")
        if self.kind == "fixed":
            isl, osl = int(self.params[0]), int(self.params[1])
            return np.tile(np.array([[isl, osl]], dtype=np.int64), (num_requests, 1))
        if self.kind == "file":
            assert self.path is not None
            table = _read_length_file(self.path)
            reps = -(-num_requests // len(table))
            return np.tile(table, (reps, 1))[:num_requests]
        isl_med, isl_sigma, osl_med, osl_sigma, scale = self._lognormal_params()
        osl_cap = MAX_OSL
        if self.kind == "reasoning":
            osl_cap = int(self.params[1]) if len(self.params) > 1 else max(1, round(REASONING_MAX_OSL * scale))
        rng = np.random.Generator(np.random.PCG64(seed))
        z = rng.standard_normal((num_requests, 2))
        isl = np.rint(isl_med * scale * np.exp(isl_sigma * z[:, 0]))
        osl = np.rint(osl_med * scale * np.exp(osl_sigma * z[:, 1]))
        out = np.empty((num_requests, 2), dtype=np.int64)
        out[:, 0] = np.clip(isl, MIN_LEN, MAX_ISL)
        out[:, 1] = np.clip(osl, MIN_LEN, min(MAX_OSL, osl_cap))
        return out

    def _lognormal_params(self) -> tuple[float, float, float, float, float]:
        if self.kind == "reasoning":
            scale = self.params[0] if self.params else 1.0
            return (REASONING_ISL_MEDIAN, REASONING_ISL_SIGMA, REASONING_OSL_MEDIAN, REASONING_OSL_SIGMA, scale)
        a, b, c, d = self.params
        return a, b, c, d, 1.0


def parse_workload(spec: str) -> Workload:
    """Parse a workload spec string (see the module docstring); raises WorkloadError naming the fix."""
    spec = spec.strip()
    if not spec:
        raise WorkloadError("workload is empty: use reasoning, fixed:ISL,OSL, lognormal:... or a file path")
    head, _, rest = spec.partition(":")
    if head == "reasoning":
        if not rest:
            return Workload(spec, "reasoning")
        parts = rest.split(",")
        values = _numbers(spec, rest, len(parts) if len(parts) in (1, 2) else 1)
        scale = values[0]
        if not 0 < scale <= 10:
            raise WorkloadError(f"workload {spec!r}: the reasoning scale must be in (0, 10]")
        if len(values) == 2:
            cap = values[1]
            if cap != int(cap) or not MIN_LEN <= cap <= MAX_OSL:
                raise WorkloadError(f"workload {spec!r}: MAX_OSL must be an integer in 1..{MAX_OSL}")
            return Workload(spec, "reasoning", (scale, cap))
        return Workload(spec, "reasoning", (scale,))
    if head == "fixed":
        isl, osl = _numbers(spec, rest, 2)
        if isl < 1 or osl < 1 or isl != int(isl) or osl != int(osl):
            raise WorkloadError(f"workload {spec!r}: ISL and OSL must be positive integers, e.g. fixed:128,4096")
        return Workload(spec, "fixed", (isl, osl))
    if head == "lognormal":
        params = _numbers(spec, rest, 4)
        if params[0] <= 0 or params[2] <= 0 or params[1] < 0 or params[3] < 0:
            raise WorkloadError(f"workload {spec!r}: medians must be > 0 and sigmas >= 0")
        return Workload(spec, "lognormal", tuple(params))
    path = Path(spec)
    if path.suffix.lower() in {".csv", ".json"}:
        if not path.is_file():
            raise WorkloadError(f"workload file {spec!r} does not exist")
        _read_length_file(path)  # validate now, so errors surface at parse time
        return Workload(spec, "file", path=path)
    raise WorkloadError(
        f"workload {spec!r} is not understood: use reasoning, reasoning:SCALE[,MAX_OSL], fixed:ISL,OSL, "
        "lognormal:ISL_MEDIAN,ISL_SIGMA,OSL_MEDIAN,OSL_SIGMA, or a .csv/.json file of isl,osl"
    )


def request_lengths(spec: str, num_requests: int, seed: int = 0) -> np.ndarray:
    """Shorthand: parse ``spec`` and draw ``num_requests`` (isl, osl) pairs."""
    return parse_workload(spec).lengths(num_requests, seed)


def _numbers(spec: str, rest: str, count: int) -> list[float]:
    parts = [p.strip() for p in rest.split(",") if p.strip()]
    if len(parts) != count:
        raise WorkloadError(f"workload {spec!r}: expected {count} comma-separated numbers after ':'")
    try:
        values = [float(p) for p in parts]
    except ValueError as exc:
        raise WorkloadError(f"workload {spec!r}: {exc}") from None
    if not all(np.isfinite(values)):
        raise WorkloadError(f"workload {spec!r}: numbers must be finite")
    return values


def _read_length_file(path: Path) -> np.ndarray:
    """Read (isl, osl) pairs from CSV (header isl,osl) or JSON; errors name the row."""
    rows: list[tuple[int, int]] = []
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames is None or not {"isl", "osl"} <= set(reader.fieldnames):
                    raise WorkloadError(f"{path}: the CSV needs a header with columns isl,osl")
                for i, row in enumerate(reader, start=2):
                    rows.append(_pair(path, i, row.get("isl"), row.get("osl")))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                raise WorkloadError(f"{path}: the JSON must be a list of [isl, osl] or {{isl, osl}} items")
            for i, item in enumerate(data):
                if isinstance(item, dict):
                    rows.append(_pair(path, i, item.get("isl"), item.get("osl")))
                elif isinstance(item, list | tuple) and len(item) == 2:
                    rows.append(_pair(path, i, item[0], item[1]))
                else:
                    raise WorkloadError(f"{path}: item {i} must be [isl, osl] or {{isl, osl}}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkloadError(f"{path}: cannot be read as UTF-8 CSV/JSON ({exc})") from None
    if not rows:
        raise WorkloadError(f"{path}: holds no requests")
    return np.array(rows, dtype=np.int64)


def _pair(path: Path, row: int, isl: object, osl: object) -> tuple[int, int]:
    try:
        a, b = int(str(isl)), int(str(osl))
    except ValueError:
        raise WorkloadError(f"{path}: row {row}: isl and osl must be integers, got {isl!r}, {osl!r}") from None
    if not (MIN_LEN <= a <= MAX_ISL * 16 and MIN_LEN <= b <= MAX_OSL * 16):
        raise WorkloadError(f"{path}: row {row}: isl/osl out of range ({a}, {b})")
    return a, b
