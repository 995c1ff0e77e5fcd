"""Which measured runs belong next to a prediction: the run's own scenario, and how far a run is from a scenario."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine.catalog import CatalogError, load_gpu, load_model
from engine.scenario import DEFAULT, Scenario, ScenarioError, validate_scenario

# Fields compared between a run and a scenario, with the run.json key holding each.
COMPARED = (
    ("model", "model_name"),
    ("gpu", "device"),
    ("dp", "dp"),
    ("tp", "tp"),
    ("pp", "pp"),
    ("max_num_seqs", "max_num_seqs"),
    ("max_num_batched_tokens", "max_num_batched_tokens"),
    ("block_size", "block_size"),
    ("num_requests", "num_requests"),
    ("workload", "workload"),
    ("seed", "seed"),
    ("kv_cache_memory_bytes", "kv_cache_memory_bytes"),
)


@dataclass(frozen=True)
class RunMatch:
    run_id: str
    name: str
    differences: tuple[str, ...]  # scenario fields whose values differ

    @property
    def exact(self) -> bool:
        return not self.differences

    def describe(self) -> str:
        if self.exact:
            return f"{self.name} — matches this scenario"
        return f"{self.name} — nearest; differs in {', '.join(self.differences)}"


def _same(field: str, scenario_value: Any, run_value: Any) -> bool:
    if field == "model":
        try:
            return load_model(str(scenario_value)).name.lower() == load_model(str(run_value)).name.lower()
        except CatalogError:
            return str(scenario_value).lower() == str(run_value).lower()
    if field == "gpu":
        try:
            return load_gpu(str(scenario_value)).name == load_gpu(str(run_value)).name
        except CatalogError:
            return str(scenario_value).lower() == str(run_value).lower()
    return scenario_value == run_value


def differences(run: Mapping[str, Any], scenario: Scenario) -> tuple[str, ...]:
    return tuple(f for f, key in COMPARED if not _same(f, getattr(scenario, f), run.get(key)))


def rank_runs(
    runs: list[Mapping[str, Any]],
    scenario: Scenario,
    meta_of: Callable[[str], Mapping[str, Any] | None],
    limit: int = 6,
) -> list[RunMatch]:
    """Runs of the scenario's model and device, fewest differences first (exact matches lead). The runs list is a
    summary, so each candidate's full metadata (``meta_of``) decides the comparison."""
    matches = []
    for run in runs:
        same_model = _same("model", scenario.model, run.get("model_name"))
        if not (same_model and _same("gpu", scenario.gpu, run.get("device"))):
            continue
        meta = meta_of(str(run["run_id"])) or run
        diff = differences(meta, scenario)
        matches.append(RunMatch(str(run["run_id"]), str(run.get("name") or run["run_id"]), diff))
    matches.sort(key=lambda m: (len(m.differences), m.run_id))
    return matches[:limit]


def scenario_from_run(meta: Mapping[str, Any]) -> tuple[Scenario | None, str]:
    """The scenario a run was measured under, checked against the catalog; (None, reason) when it can't be."""

    def pick(key: str, default: Any) -> Any:
        value = meta.get(key)
        return default if value is None else value

    try:
        sc = Scenario(
            model=str(pick("model_name", DEFAULT.model)),
            gpu=str(pick("device", DEFAULT.gpu)),
            gpus=int(pick("num_devices", 1)),
            dp=int(pick("dp", 1)),
            tp=int(pick("tp", 1)),
            pp=int(pick("pp", 1)),
            gpu_memory_utilization=float(pick("gpu_memory_utilization", DEFAULT.gpu_memory_utilization)),
            max_model_len=meta.get("max_model_len"),
            max_num_seqs=int(pick("max_num_seqs", DEFAULT.max_num_seqs)),
            max_num_batched_tokens=int(pick("max_num_batched_tokens", DEFAULT.max_num_batched_tokens)),
            block_size=int(pick("block_size", DEFAULT.block_size)),
            dtype=str(pick("dtype", DEFAULT.dtype)),
            quantization=str(pick("quantization", DEFAULT.quantization)),
            kv_cache_dtype=str(pick("kv_cache_dtype", DEFAULT.kv_cache_dtype)),
            num_requests=int(pick("num_requests", DEFAULT.num_requests)),
            workload=str(pick("workload", DEFAULT.workload)),
            seed=int(pick("seed", DEFAULT.seed)),
            arrival_rate=meta.get("arrival_rate"),
            kv_cache_memory_bytes=meta.get("kv_cache_memory_bytes"),
        )
        sc = validate_scenario(sc)
        with contextlib.suppress(CatalogError):  # the catalog's spelling ("cpu" → "cpu-host") for controls, links
            sc = replace(sc, gpu=load_gpu(sc.gpu).name)
        return sc, ""
    except (ScenarioError, TypeError, ValueError) as exc:
        return None, str(exc)
