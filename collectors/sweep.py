"""Sweeps: a TOML file naming a base job, axes to cross, and optional explicit points; run every point once.

```toml
[sweep]
name = "cpu-iv-a-concurrency"      # prefix of every job name and run id
experiment = "IV-A"                # the paper section it reproduces
title = "..."                      # one line for people
target = "cpu"                     # cpu | 8xH200 | any free text naming the hardware it is sized for
around_knee = false                # true: measure around the predicted knee only (collectors.knee_sweep)

[base]                             # JobSpec / EngineParams fields shared by every point
model = "tiny-llama-4l"
workload = "fixed:32,256"

[axes]                             # the cartesian product of these lists
max_num_seqs = [4, 8, 16, 64]

[[points]]                         # optional: explicit variants, each crossed with the axes
label = "dp2"
dp = 2
```

Points that share an engine configuration run on one started engine (start-up costs ~20 s on CPU). A point whose
bundle or ledger entry says ``complete`` is skipped, so re-running an interrupted sweep finishes it.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.spec import EngineParams, JobSpec, SpecError, job_from_mapping

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
_SWEEP_KEYS = {"name", "experiment", "title", "target", "description", "around_knee"}


@dataclass(frozen=True)
class Sweep:
    name: str
    experiment: str
    title: str
    target: str
    description: str
    jobs: tuple[JobSpec, ...]
    path: Path | None = None
    axes: dict[str, list[Any]] = field(default_factory=dict)
    around_knee: bool = False  # measure around the predicted knee (collectors.knee_sweep)

    def engine_groups(self) -> list[tuple[EngineParams, list[JobSpec]]]:
        """Jobs grouped by engine configuration, in first-appearance order: one engine start per group."""
        groups: dict[EngineParams, list[JobSpec]] = {}
        for job in self.jobs:
            groups.setdefault(job.engine, []).append(job)
        return list(groups.items())


def load_sweep(path: Path, check_models: bool = True) -> Sweep:
    """Parse and validate a sweep TOML; every error names the file and the point."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: no such sweep file (presets: {', '.join(list_presets())})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from None
    return sweep_from_mapping(data, str(path), path, check_models)


def sweep_from_mapping(data: dict[str, Any], where: str, path: Path | None = None, check_models: bool = True) -> Sweep:
    unknown = sorted(set(data) - {"sweep", "base", "axes", "points"})
    if unknown:
        raise SpecError(f"{where}: unknown table(s) {', '.join(unknown)}; use [sweep], [base], [axes], [[points]]")
    head = data.get("sweep", {})
    if not isinstance(head, dict) or not str(head.get("name", "")).strip():
        raise SpecError(f"{where}: [sweep] needs a name")
    bad = sorted(set(head) - _SWEEP_KEYS)
    if bad:
        raise SpecError(
            f"{where}: [sweep] has unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(_SWEEP_KEYS))}"
        )
    base = data.get("base", {})
    axes = data.get("axes", {})
    points = data.get("points", [{}])
    if not isinstance(base, dict) or not isinstance(axes, dict) or not isinstance(points, list):
        raise SpecError(f"{where}: [base] and [axes] must be tables and [[points]] an array of tables")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}: axis {key!r} must be a non-empty list, e.g. {key} = [1, 2]")
    name = str(head["name"]).strip()
    jobs: list[JobSpec] = []
    axis_names = list(axes)
    for p_index, point in enumerate(points or [{}]):
        if not isinstance(point, dict):
            raise SpecError(f"{where}: points[{p_index}] must be a table")
        point = dict(point)
        label = str(point.pop("label", "")).strip()
        for combo in itertools.product(*(axes[a] for a in axis_names)):
            values = dict(zip(axis_names, combo, strict=True))
            merged = {**base, **point, **values}
            parts = [name] + ([label] if label else []) + [f"{_short(k)}{_fmt(v)}" for k, v in values.items()]
            merged["name"] = "-".join(parts)
            spot = f"{where}: point {merged['name']}"
            jobs.append(job_from_mapping(merged, spot, check_models))
    ids = [j.run_id for j in jobs]
    if len(set(ids)) != len(ids):
        raise SpecError(f"{where}: two points describe the same job; make their parameters differ")
    return Sweep(
        name=name,
        experiment=str(head.get("experiment", "")),
        title=str(head.get("title", name)),
        target=str(head.get("target", "")),
        description=str(head.get("description", "")),
        jobs=tuple(jobs),
        path=path,
        axes={k: list(v) for k, v in axes.items()},
        around_knee=_flag(head.get("around_knee", False), f"{where}: [sweep] around_knee"),
    )


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{where} must be true or false, got {value!r}")
    return value


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def resolve_sweep_path(name_or_path: str) -> Path:
    """A sweep file path, or the name of a preset in collectors/presets."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESETS_DIR / f"{name_or_path.removesuffix('.toml')}.toml"
    if preset.is_file():
        return preset
    raise SpecError(f"sweep {name_or_path!r} is neither a file nor a preset; presets: {', '.join(list_presets())}")


ProgressFactory = Callable[[JobSpec], Callable[[int, int, float, int], None]]


_SHORT = {
    "max_num_seqs": "seqs",
    "num_requests": "n",
    "kv_cache_memory_bytes": "kv",
    "max_num_batched_tokens": "mbt",
    "workload": "wl",
    "model": "",
}


def _short(key: str) -> str:
    return _SHORT.get(key, key)


def _fmt(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1 << 20 and value % (1 << 20) == 0:
        return f"{value >> 20}MiB"
    text = str(value)
    return text.replace(":", "").replace(",", "x").replace("/", "_")
