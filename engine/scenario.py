"""One frozen dataclass for everything a user can set: the CLI's flags, the dashboard's controls, a link's params.

Field names are the CLI flag names in snake case and the URL query keys, so a scenario reads the same everywhere.
``scenario_to_params`` / ``scenario_from_params`` encode and decode links (the decoder never raises: values it
cannot use are reset to defaults and reported as notices); ``validate_scenario`` is the strict check the CLI uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.catalog import GpuSpec

LINK_VERSION = 1


@dataclass(frozen=True)
class Scenario:
    model: str = "DeepSeek-R1-Distill-Llama-8B"  # catalog name or path to a config.json
    gpu: str = "H200"  # catalog name, or "custom" with gpu_mem_gib
    gpu_mem_gib: float | None = None  # custom device memory
    gpus: int = 1
    dp: int = 1
    tp: int = 1
    pp: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None  # None: the model's own maximum
    max_num_seqs: int = 1024
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    dtype: str = "bfloat16"
    quantization: str = "none"  # none | fp8 | awq | gptq
    kv_cache_dtype: str = "auto"  # auto | fp8
    num_requests: int = 2000
    workload: str = "reasoning"  # engine.workload spec
    seed: int = 0
    arrival_rate: float | None = None  # requests/s; None: all arrive at t=0 as in the paper
    kv_cache_memory_bytes: int | None = None  # fixed KV pool per replica (CPU runs); None: derived from memory
    # `vllm bench serve`'s client (engine.arrivals): --request-rate (None: inf, all sent at t=0), --burstiness
    # (gamma shape, 1: Poisson), --max-concurrency (None: no cap). Exclusive with arrival_rate (evenly spaced).
    request_rate: float | None = None
    burstiness: float = 1.0
    max_concurrency: int | None = None
    # The scheduling policy: True is vLLM V1's (running requests first, prompts chunked to the token budget,
    # decodes and prefill chunks in one step); False is vLLM V0's ``Scheduler._schedule_default`` without chunked
    # prefill (V0 before 0.8.0 forced it off for MLA models, engine.vllm_rules.v0_scheduler_flags): whole prompts
    # only, and a step that admits any prompt runs no decode.
    enable_chunked_prefill: bool = True
    # vLLM's async scheduling (--async-scheduling; engine.perf): the host schedules step n+1 while the device runs
    # step n, so a one-stage GPU step takes max(device, host) rather than their sum. vLLM turns it on by default from
    # 0.14 (engine.vllm_rules.async_scheduling_default); off here so that a scenario prices the steps as before
    # unless a user or a published record's release says otherwise.
    async_scheduling: bool = False
    # GPU peer access between the replica's devices (NVLink or PCIe P2P). False where a container, VM or board hides
    # it (vLLM logs "Custom allreduce is disabled because your platform lacks GPU P2P capability"): collectives then
    # cross PCIe through host memory (engine.catalog.without_peer_to_peer). Only TP/PP > 1 layouts feel it.
    peer_to_peer: bool = True

    def device(self) -> GpuSpec:
        """The scenario's GPU as the catalog resolves it (a custom memory size, no peer access): the one place the
        engine turns the three fields into a device (the catalog does not know scenarios)."""
        from engine.catalog import resolve_device

        return resolve_device(self.gpu, self.gpu_mem_gib, self.peer_to_peer)


class ScenarioError(ValueError):
    """A scenario value that cannot be used; ``field`` names it, the message says the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


DEFAULT = Scenario()
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Scenario))
OPTIONAL_FIELDS = {
    "gpu_mem_gib",
    "max_model_len",
    "arrival_rate",
    "kv_cache_memory_bytes",
    "request_rate",
    "max_concurrency",
}
INT_FIELDS = {
    "gpus",
    "dp",
    "tp",
    "pp",
    "max_model_len",
    "max_num_seqs",
    "max_num_batched_tokens",
    "block_size",
    "num_requests",
    "seed",
    "kv_cache_memory_bytes",
    "max_concurrency",
}
FLOAT_FIELDS = {"gpu_mem_gib", "gpu_memory_utilization", "arrival_rate", "request_rate", "burstiness"}
BOOL_FIELDS = {"enable_chunked_prefill", "async_scheduling", "peer_to_peer"}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}

# Valid ranges: (min, max, slider step, unit) for numbers; choices for strings. The dashboard builds widgets from
# these and the decoder checks against them, so a link can never carry what a widget cannot show.
FIELD_RANGES: dict[str, dict[str, Any]] = {
    "gpu_mem_gib": {"min": 1.0, "max": 1024.0, "step": 1.0, "unit": "GiB"},
    "gpus": {"min": 1, "max": 64, "step": 1, "unit": "devices"},
    "dp": {"min": 1, "max": 64, "step": 1, "unit": "replicas"},
    "tp": {"min": 1, "max": 64, "step": 1, "unit": "ranks"},
    "pp": {"min": 1, "max": 64, "step": 1, "unit": "stages"},
    "gpu_memory_utilization": {"min": 0.05, "max": 0.99, "step": 0.01, "unit": "fraction"},
    "max_model_len": {"min": 16, "max": 1_048_576, "step": 1024, "unit": "tokens"},
    "max_num_seqs": {"min": 1, "max": 16_384, "step": 1, "unit": "sequences"},
    "max_num_batched_tokens": {"min": 16, "max": 262_144, "step": 256, "unit": "tokens"},
    "block_size": {"choices": [1, 8, 16, 32, 64, 128, 256], "unit": "tokens"},
    "dtype": {"choices": ["auto", "bfloat16", "float16", "float32"]},
    "quantization": {"choices": ["none", "fp8", "awq", "gptq"]},
    "kv_cache_dtype": {"choices": ["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]},
    "num_requests": {"min": 1, "max": 100_000, "step": 100, "unit": "requests"},
    "seed": {"min": 0, "max": 2**31 - 1, "step": 1, "unit": ""},
    "arrival_rate": {"min": 0.001, "max": 100_000.0, "step": 1.0, "unit": "requests/s"},
    "kv_cache_memory_bytes": {"min": 1 << 20, "max": 1 << 44, "step": 1 << 20, "unit": "bytes"},
    "request_rate": {"min": 0.001, "max": 100_000.0, "step": 1.0, "unit": "requests/s"},
    "burstiness": {"min": 0.01, "max": 100.0, "step": 0.1, "unit": "gamma shape"},
    "max_concurrency": {"min": 1, "max": 100_000, "step": 1, "unit": "requests"},
}


def field_range(name: str) -> dict[str, Any]:
    """The valid range or choices of a field (empty for free text such as model, gpu and workload)."""
    return dict(FIELD_RANGES.get(name, {}))


def valid_layouts(gpus: int, gpus_per_node: int = 8) -> list[tuple[int, int, int]]:
    """Every (dp, tp, pp) with dp·tp·pp = gpus and TP inside one node, ordered by (tp, pp) so pure DP comes first."""
    out = []
    for tp in range(1, min(gpus, gpus_per_node) + 1):
        if gpus % tp:
            continue
        rest = gpus // tp
        for pp in range(1, rest + 1):
            if rest % pp == 0:
                out.append((rest // pp, tp, pp))
    return sorted(out, key=lambda x: (x[1], x[2]))


def _check_value(name: str, value: Any) -> Any:
    """Coerce and range-check one field; raises ScenarioError naming the field and the valid range."""
    if name in OPTIONAL_FIELDS and (value is None or str(value).strip().lower() in {"", "none", "null"}):
        return None
    if name == "request_rate" and str(value).strip().lower() in {"inf", "infinity"}:
        return None  # vllm bench serve's default: every request sent at t = 0
    if value is None:
        raise ScenarioError(name, "a value is required")
    if name in BOOL_FIELDS:
        return _check_bool(name, value)
    spec = FIELD_RANGES.get(name, {})
    if name in INT_FIELDS:
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ScenarioError(name, f"must be an integer, got {value!r}") from None
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise ScenarioError(name, f"must be an integer, got {value!r}")
        value = int(as_float)
    elif name in FLOAT_FIELDS:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ScenarioError(name, f"must be a number, got {value!r}") from None
        if not math.isfinite(value):
            raise ScenarioError(name, f"must be finite, got {value!r}")
    else:
        value = str(value).strip()
        if not value:
            raise ScenarioError(name, "must not be empty")
    if "choices" in spec and value not in spec["choices"]:
        raise ScenarioError(name, f"{value!r} is not one of {', '.join(map(str, spec['choices']))}")
    if "min" in spec and not spec["min"] <= value <= spec["max"]:
        raise ScenarioError(name, f"{value} is outside {spec['min']}..{spec['max']}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ScenarioError(name, f"must be true or false, got {value!r}")


def validate_scenario(s: Scenario, check_catalog: bool = True) -> Scenario:
    """Strict check of every field and their combinations; returns the scenario with ``gpus`` made consistent.

    Raises ScenarioError naming the first bad field. ``check_catalog`` also resolves model, GPU and workload.
    """
    values = {name: _check_value(name, getattr(s, name)) for name in FIELD_NAMES}
    s = Scenario(**values)
    if s.dp * s.tp * s.pp != s.gpus:
        if s.gpus != 1 and (s.dp, s.tp, s.pp) != (1, 1, 1):
            raise ScenarioError("gpus", f"dp×tp×pp = {s.dp * s.tp * s.pp} but gpus = {s.gpus}; make them agree")
        if s.gpus == 1:
            s = replace(s, gpus=s.dp * s.tp * s.pp)
    if s.arrival_rate is not None and (s.request_rate is not None or s.max_concurrency is not None):
        raise ScenarioError(
            "arrival_rate", "set either arrival_rate (evenly spaced) or the bench client's request_rate/max_concurrency"
        )
    if s.max_concurrency is not None and s.max_concurrency < s.dp:
        raise ScenarioError("max_concurrency", f"{s.max_concurrency} is below dp={s.dp}: give every replica a slot")
    if s.gpu == "custom" and s.gpu_mem_gib is None:
        raise ScenarioError("gpu_mem_gib", "a custom gpu needs its memory in GiB")
    if check_catalog:
        from engine.catalog import CatalogError, load_model, resolve_device, without_peer_to_peer
        from engine.workload import WorkloadError, parse_workload

        try:
            model = load_model(s.model)
        except CatalogError as exc:
            raise ScenarioError("model", str(exc)) from None
        try:
            device = resolve_device(s.gpu, s.gpu_mem_gib)
        except CatalogError as exc:
            raise ScenarioError("gpu", str(exc)) from None
        if not s.peer_to_peer:
            try:
                without_peer_to_peer(device)
            except CatalogError as exc:
                raise ScenarioError("peer_to_peer", str(exc)) from None
        try:
            parse_workload(s.workload)
        except WorkloadError as exc:
            raise ScenarioError("workload", str(exc)) from None
        if s.max_model_len is not None and s.max_model_len > model.max_position_embeddings:
            raise ScenarioError(
                "max_model_len", f"{s.max_model_len} exceeds {model.name}'s {model.max_position_embeddings} positions"
            )
    return s


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if value == value and abs(value) < 1e15 else repr(value)
    return str(value)


def scenario_to_params(s: Scenario) -> dict[str, str]:
    """URL query params: only fields that differ from the defaults, plus ``v`` (the link format version)."""
    out = {"v": str(LINK_VERSION)}
    for name in FIELD_NAMES:
        value = getattr(s, name)
        if value != getattr(DEFAULT, name):
            out[name] = "none" if value is None else _encode(value)
    return out


def _migrate(params: dict[str, str], version: int, notices: list[str]) -> dict[str, str]:
    """Bring an older link's params to the current version. Version 0 (no ``v``) used the same keys."""
    if version < LINK_VERSION:
        notices.append(f"link from format version {version} was read as version {LINK_VERSION}")
    return params


def scenario_from_params(params: dict[str, Any]) -> tuple[Scenario, list[str]]:
    """Decode URL params. Never raises: unusable values fall back to defaults, each with a human notice."""
    notices: list[str] = []
    flat = {str(k): (v[0] if isinstance(v, list | tuple) and v else v) for k, v in dict(params or {}).items()}
    raw_v = flat.pop("v", None)
    try:
        version = int(str(raw_v)) if raw_v is not None else 0
    except ValueError:
        notices.append(f"link version {raw_v!r} is not a number; read as version {LINK_VERSION}")
        version = LINK_VERSION
    if version > LINK_VERSION:
        notices.append(f"link is from a newer version ({version}); fields this version knows were read")
    flat = _migrate(flat, version, notices)
    values: dict[str, Any] = {}
    for key, raw in flat.items():
        if key not in FIELD_NAMES:
            notices.append(f"ignored unknown parameter {key!r}")
            continue
        try:
            values[key] = _check_value(key, raw)
        except ScenarioError as exc:
            notices.append(f"{exc}; reset to {getattr(DEFAULT, key)!r}")
    s = Scenario(**values)
    # Catalog checks: an unknown model or device resets to the default rather than breaking the page.
    from engine.catalog import _ALIASES, CatalogError, list_models, load_model, resolve_device
    from engine.workload import WorkloadError, parse_workload

    catalog_names = {n.lower() for n in list_models()} | set(_ALIASES)
    try:
        if s.model.lower() not in catalog_names:  # links carry catalog names only, never file paths
            raise CatalogError(s.model)
        s = replace(s, model=load_model(s.model).name)
    except CatalogError:
        notices.append(f"model {s.model!r} is not in the catalog; reset to {DEFAULT.model}")
        s = replace(s, model=DEFAULT.model)
    try:
        resolve_device(s.gpu, s.gpu_mem_gib)
    except CatalogError as exc:
        notices.append(f"gpu: {exc}; reset to {DEFAULT.gpu}")
        s = replace(s, gpu=DEFAULT.gpu, gpu_mem_gib=None)
    try:
        parse_workload(s.workload)
    except WorkloadError as exc:
        notices.append(f"workload: {exc}; reset to {DEFAULT.workload}")
        s = replace(s, workload=DEFAULT.workload)
    if s.arrival_rate is not None and (s.request_rate is not None or s.max_concurrency is not None):
        notices.append(
            "arrival_rate and the bench client's request_rate/max_concurrency exclude each other; kept the client's"
        )
        s = replace(s, arrival_rate=None)
    if s.max_concurrency is not None and s.max_concurrency < s.dp:
        notices.append(f"max_concurrency {s.max_concurrency} is below dp={s.dp}; removed")
        s = replace(s, max_concurrency=None)
    max_pos = load_model(s.model).max_position_embeddings
    if s.max_model_len is not None and s.max_model_len > max_pos:
        notices.append(f"max_model_len {s.max_model_len} exceeds the model's {max_pos}; reset to the model's")
        s = replace(s, max_model_len=None)
    if s.dp * s.tp * s.pp != s.gpus:
        if "gpus" in values and ("dp" in values or "tp" in values or "pp" in values):
            notices.append(f"gpus {s.gpus} did not match dp×tp×pp = {s.dp * s.tp * s.pp}; set to the layout's")
        s = replace(s, gpus=s.dp * s.tp * s.pp) if any(k in values for k in ("dp", "tp", "pp")) else s
    return s, notices
