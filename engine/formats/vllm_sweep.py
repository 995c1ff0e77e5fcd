"""``vllm bench sweep serve`` output: a folder (or a zip of it) of per-point results -> one run per point, one sweep.

What the tool writes (vllm/benchmarks/sweep/serve.py, vLLM 0.32): under ``OUTPUT_DIR/EXPERIMENT/`` one folder per
(serve, bench) parameter combination, ``SERVE-<serve params>-BENCH-<bench params>``, holding ``run=N.json`` for each
repetition: the ``vllm bench serve --save-result`` JSON (summary only unless the bench command adds
``--save-detailed``) with the combination's serve and bench parameters and ``run_number`` added at the top level.
``summary.json`` (per combination), ``summary.csv`` (per experiment), ``warmup.json`` and ``*.failure.json`` repeat
or precede those figures and are not read.

Each ``run=N.json`` becomes one run. The runs share ``extra.sweep.id`` (a digest of every point file, so re-importing
the same folder is recognised) and their names say the combination; the serve parameters that are run fields
(``max_num_seqs``, ``max_num_batched_tokens``, ``block_size``, ``max_model_len``, ``gpu_memory_utilization``,
``tensor_parallel_size`` -> ``tp`` ...) fill those fields, so runs of one sweep differ where the sweep varied them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

from engine.bundle import RUN_FIELDS
from engine.formats import vllm_bench
from engine.formats.model import Limits, ParsedRun, ValidationError
from engine.formats.outside import coerce_meta_value

POINT_FILE = re.compile(r"^run=(\d+)\.json$")
METRIC_KEY = re.compile(r"^(mean|median|std|p\d+(\.\d+)?)_[a-z0-9_]+_(ms|s)$")
FLAG_FIELDS = {"tensor_parallel_size": "tp", "pipeline_parallel_size": "pp", "data_parallel_size": "dp"}
ENGINE_FLAGS = (
    "max_num_seqs", "max_num_batched_tokens", "block_size", "max_model_len", "gpu_memory_utilization",
    "kv_cache_memory_bytes", "dtype", "kv_cache_dtype", "quantization", "enable_chunked_prefill",
)  # fmt: skip
MAX_SWEEP_FILES = 4096


def point_files(names: list[str]) -> list[str]:
    """The ``run=N.json`` files among an archive's or folder's file names (relative, '/'-separated)."""
    return sorted(name for name in names if POINT_FILE.match(PurePosixPath(name).name))


def folder_members(path: Path, limits: Limits, display: str) -> dict[str, bytes]:
    """The ``run=N.json`` files under a sweep folder (at most three levels down), read under the size limit."""
    found = [p for pattern in ("run=*.json", "*/run=*.json", "*/*/run=*.json") for p in path.glob(pattern)]
    if len(found) > MAX_SWEEP_FILES:
        raise ValidationError.one(display, f"{len(found)} point files (limit {MAX_SWEEP_FILES})", "split the sweep")
    members: dict[str, bytes] = {}
    total = 0
    for file in sorted(found):
        if not file.is_file():
            continue
        total += file.stat().st_size
        if total > limits.max_file_bytes:
            raise ValidationError.one(
                display, f"the sweep's files pass the {limits.max_file_bytes:,}-byte limit", "split the sweep"
            )
        members[file.relative_to(path).as_posix()] = file.read_bytes()
    return members


def read_sweep(members: dict[str, bytes], display: str) -> list[ParsedRun]:
    """One run per ``run=N.json``; every run carries the sweep's id, its combination and the varied parameters."""
    points = point_files(list(members))
    if not points:
        raise ValidationError.one(display, "no run=N.json files", "point at the folder vllm bench sweep serve wrote")
    # Identity from each point's combination folder and file name, not the path above them: the same sweep zipped
    # inside another folder, or given as the folder itself, is the same sweep.
    digest = hashlib.sha256()
    for name in points:
        digest.update(_combination(name).encode() + b"/" + PurePosixPath(name).name.encode() + b"\0")
        digest.update(hashlib.sha256(members[name]).digest())
    sweep_id = digest.hexdigest()
    combinations = sorted({_combination(name) for name in points})
    experiment = _experiment(points)
    runs = []
    for name in points:
        where = f"{display}/{name}"
        obj = _point_json(members[name], where)
        combination = _combination(name)
        params = {k: v for k, v in obj.items() if _is_parameter(k, v)}
        known = _fields_from_params(params, where)
        number = POINT_FILE.match(PurePosixPath(name).name)[1]
        index = combinations.index(combination)
        known["run_id"] = f"sweep-{sweep_id[:12]}-c{index}-r{number}"
        known["name"] = f"vllm bench sweep {experiment}: {combination or 'default'}, run {number}"
        data = members[name]
        if all(isinstance(obj.get(key), list) for key in vllm_bench.DETAIL_KEYS):
            run = vllm_bench.read_detailed(obj, data, where, 0, known_extra=known)
        else:
            run = vllm_bench.read_summary_only(obj, data, where, 0, known_extra=known)
        run.origin = "vllm-bench-sweep"
        run.extra["sweep"] = {
            "id": sweep_id,
            "experiment": experiment,
            "combination": combination,
            "combination_index": index,
            "run_number": int(number),
            "points": len(points),
            "parameters": params,
        }
        runs.append(run)
    return runs


def _combination(name: str) -> str:
    """The combination folder (``SERVE-...-BENCH-...``) a point file sits in; '' for a point at the top."""
    return PurePosixPath(name).parent.name


def _experiment(points: list[str]) -> str:
    parts = PurePosixPath(points[0]).parts
    return parts[-3] if len(parts) >= 3 else "sweep"


def _point_json(blob: bytes, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(blob.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValidationError.one(where, f"not UTF-8 text (byte {exc.start})", "use the file as written") from None
    except (json.JSONDecodeError, RecursionError):
        raise ValidationError.one(where, "not valid JSON", "use the file as vllm bench sweep wrote it") from None
    if not vllm_bench.looks_like_bench(obj):
        raise ValidationError.one(
            where, "not a vllm bench serve result", "use the file as vllm bench sweep wrote it (run=N.json)"
        )
    return obj


def _is_parameter(key: str, value: Any) -> bool:
    """A serve or bench parameter the sweep added (or the client recorded), not a result figure."""
    if key in ("run_number", "_benchmark_name") or METRIC_KEY.match(key) or isinstance(value, (list, dict)):
        return False
    return key not in vllm_bench.BENCH_KEYS or key in ("request_rate", "max_concurrency", "num_prompts", "burstiness")


def _fields_from_params(params: dict[str, Any], where: str) -> dict[str, Any]:
    known: dict[str, Any] = {}
    for key, value in params.items():
        flag = key.replace("-", "_")
        field = FLAG_FIELDS.get(flag, flag if flag in ENGINE_FLAGS else None)
        if field is None or field not in RUN_FIELDS or value is None:
            continue
        try:
            known[field] = coerce_meta_value(field, str(value))
        except ValueError as exc:
            raise ValidationError.one(where, f"sweep parameter {exc}", "fix that parameter", column=key) from None
    return known
