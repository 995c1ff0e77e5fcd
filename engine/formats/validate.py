"""Check a ``ParsedRun`` against the bundle format before anything is written.

Every check names the file, row, column and the fix. Checks are vectorised (pyarrow.compute), so validating a
million-row table costs milliseconds; only the first offending row of each check is reported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from engine.bundle import (
    BUNDLE_VERSION,
    RUN_FIELDS,
    RUN_SOURCES,
    RUN_STATUSES,
    TABLES,
    canonical_config_sha256,
)
from engine.formats.model import Limits, ParsedRun, Problem, ValidationError

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_PROBLEMS = 20
MAX_TEXT_CHARS = 100_000  # a run.json string field; model configs are dicts, not strings

# Fields that must be known even for runs from outside formats (the store cannot show a run without them).
ALWAYS_REQUIRED = ("run_id", "name", "source", "status")

# Per table: columns that may not be null.
NOT_NULL: dict[str, tuple[str, ...]] = {
    "engine_samples": ("t_s",),
    "requests": ("request_id", "isl", "osl", "arrival_s"),
    "gpu_samples": ("t_s", "gpu_index"),
}
FRACTION_COLUMNS = {"kv_usage", "sm_util", "mem_bw_util"}
TIME_COLUMNS = {"t_s", "arrival_s", "first_scheduled_s", "first_token_s", "finished_s"}
COUNTER_COLUMNS = ("prompt_tokens_total", "generation_tokens_total", "preemptions_total")
NON_NEGATIVE = {
    "running",
    "waiting",
    "prompt_tokens_total",
    "generation_tokens_total",
    "preemptions_total",
    "output_tokens",
    "num_preemptions",
    "gpu_index",
    "mem_used_bytes",
    "power_w",
}
POSITIVE_INT_FIELDS = ("num_devices", "dp", "tp", "pp", "max_num_seqs", "max_num_batched_tokens", "block_size")
NON_NEGATIVE_INT_FIELDS = ("max_model_len", "kv_cache_memory_bytes", "kv_capacity_tokens", "kv_blocks", "num_requests")


class _Collector:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, message: str, fix: str, *, row: int | None = None, column: str | None = None) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(self.file, message, fix, row=row, column=column))

    def raise_if_any(self) -> None:
        if self.problems:
            raise ValidationError(self.problems)


def validate_run(run: ParsedRun, limits: Limits) -> ParsedRun:
    """Return ``run`` with normalised metadata and tables cast to the bundle schema, or raise ValidationError."""
    problems = _Collector(run.file)
    meta = _validate_meta(run, problems)
    problems.raise_if_any()
    tables: dict[str, pa.Table] = {}
    for name, (_file, schema, required) in TABLES.items():
        table = run.tables.get(name)
        if table is None:
            if required and run.strict:
                problems.add(f"table {name!r} is missing", f"add {name}.parquet with columns {schema.names}")
            table = schema.empty_table()
        tables[name] = _validate_table(name, table, schema, run, limits, problems)
    problems.raise_if_any()
    return ParsedRun(
        meta=meta,
        tables=tables,
        origin=run.origin,
        file=run.file,
        content_sha256=run.content_sha256,
        strict=run.strict,
        missing=list(run.missing),
        extra=dict(run.extra),
        published=run.published,
        published_text=run.published_text,
    )


# ---------------------------------------------------------------------------------------------------------- metadata


def _validate_meta(run: ParsedRun, problems: _Collector) -> dict[str, Any]:
    meta = dict(run.meta)
    out: dict[str, Any] = {}
    for key, (types, required, meaning) in RUN_FIELDS.items():
        value = meta.get(key)
        column = f"run.{key}"
        if value is None:
            if required and (run.strict or key in ALWAYS_REQUIRED):
                problems.add("required field is missing or null", f"set {key} ({meaning})", column=column)
            out[key] = None
            continue
        if not _has_type(value, types):
            expected = " or ".join(t.__name__ for t in types)
            problems.add(
                f"expected {expected}, got {type(value).__name__} {_short(value)}",
                f"write {key} as {expected} ({meaning})",
                column=column,
            )
            out[key] = None
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.add(f"{value} is not a finite number", f"write a finite {key}", column=column)
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            problems.add(f"{len(value)} characters is too long", f"shorten {key}", column=column)
        out[key] = float(value) if float in types and not isinstance(value, bool) else value
    for key in meta:
        if key not in RUN_FIELDS and key not in run.extra:
            run.extra[key] = meta[key]
    _check_meta_values(out, problems)
    return out


def _has_type(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_meta_values(meta: dict[str, Any], problems: _Collector) -> None:
    run_id = meta.get("run_id")
    if isinstance(run_id, str) and not RUN_ID_PATTERN.match(run_id):
        problems.add(
            f"run id {_short(run_id)} has characters other than letters, digits, '-', '_', '.' (or is over 128)",
            "rename the run with only those characters, starting with a letter or digit",
            column="run.run_id",
        )
    version = meta.get("bundle_version")
    if isinstance(version, int) and not 1 <= version <= BUNDLE_VERSION:
        problems.add(
            f"bundle_version {version} is not one this store reads (1..{BUNDLE_VERSION})",
            "write the bundle with this version of engine.bundle, or upgrade cliffscope",
            column="run.bundle_version",
        )
    if meta.get("source") is not None and meta["source"] not in RUN_SOURCES:
        problems.add(
            f"source {_short(meta['source'])} is unknown", f"use one of {', '.join(RUN_SOURCES)}", column="run.source"
        )
    if meta.get("status") is not None and meta["status"] not in RUN_STATUSES:
        problems.add(
            f"status {_short(meta['status'])} is unknown", f"use one of {', '.join(RUN_STATUSES)}", column="run.status"
        )
    for key in POSITIVE_INT_FIELDS:
        if isinstance(meta.get(key), int) and not 1 <= meta[key] <= 2**31 - 1:
            problems.add(f"{meta[key]} is out of range", f"{key} must be a positive integer", column=f"run.{key}")
    for key in NON_NEGATIVE_INT_FIELDS:
        if isinstance(meta.get(key), int) and not 0 <= meta[key] <= 2**62:
            problems.add(f"{meta[key]} is out of range", f"{key} must be a non-negative integer", column=f"run.{key}")
    if isinstance(meta.get("seed"), int) and not -(2**63) <= meta["seed"] < 2**63:
        problems.add("seed does not fit in 64 bits", "use a smaller seed", column="run.seed")
    gmu = meta.get("gpu_memory_utilization")
    if isinstance(gmu, float) and not 0.0 < gmu <= 1.0:
        problems.add(
            f"{gmu} is not a fraction in (0, 1]", "write e.g. 0.9, not 90", column="run.gpu_memory_utilization"
        )
    for key in ("arrival_rate", "sample_interval_s"):
        value = meta.get(key)
        if isinstance(value, float) and not 0.0 <= value < 1e9:
            problems.add(f"{value} is out of range", f"{key} must be a non-negative number", column=f"run.{key}")
    config, sha = meta.get("model_config"), meta.get("model_config_sha256")
    if isinstance(config, dict) and isinstance(sha, str):
        try:
            actual = canonical_config_sha256(config)
        except (TypeError, ValueError):
            problems.add("model_config is not plain JSON", "write the config.json as loaded", column="run.model_config")
        else:
            if actual != sha:
                problems.add(
                    "model_config_sha256 does not match model_config",
                    f"recompute it with engine.bundle.canonical_config_sha256 (expected {actual[:12]}...)",
                    column="run.model_config_sha256",
                )


# ------------------------------------------------------------------------------------------------------------ tables


def _validate_table(
    name: str, table: pa.Table, schema: pa.Schema, run: ParsedRun, limits: Limits, problems: _Collector
) -> pa.Table:
    known = set(schema.names)
    extra = [c for c in table.column_names if c not in known]
    if extra:
        problems.add(
            f"{name}: unknown column(s) {', '.join(map(repr, extra[:5]))}",
            f"remove them or rename to the documented columns {schema.names} (docs/formats.md)",
        )
        return schema.empty_table()
    if len(set(table.column_names)) != len(table.column_names):
        problems.add(f"{name}: a column name appears twice", "keep one column of each name")
        return schema.empty_table()
    if table.num_rows > limits.max_rows:
        problems.add(
            f"{name}: {table.num_rows:,} rows is over the limit of {limits.max_rows:,}",
            "split the run, or raise the store's max_rows limit",
        )
        return schema.empty_table()
    columns: list[pa.ChunkedArray] = []
    for schema_field in schema:
        column_name = schema_field.name
        if column_name in table.column_names:
            column = _cast_column(name, column_name, table.column(column_name), schema_field.type, problems)
        else:
            if column_name in NOT_NULL[name] and table.num_rows > 0:
                problems.add(f"{name}: required column is missing", f"add a {column_name} column", column=column_name)
            column = pa.chunked_array([pa.nulls(table.num_rows, schema_field.type)])
        columns.append(column)
    if problems.problems:
        return schema.empty_table()
    cast = pa.Table.from_arrays(columns, schema=schema)
    _check_values(name, cast, limits, problems)
    return cast


def _cast_column(
    table: str, column: str, values: pa.ChunkedArray, target: pa.DataType, problems: _Collector
) -> pa.ChunkedArray:
    if values.type == target:
        return values
    source = values.type
    if pa.types.is_null(source):
        return pa.chunked_array([pa.nulls(len(values), target)])
    if pa.types.is_string(target) and (
        pa.types.is_integer(source) or pa.types.is_string(source) or pa.types.is_large_string(source)
    ):
        return values.cast(target)
    numeric_source = pa.types.is_integer(source) or pa.types.is_floating(source) or pa.types.is_boolean(source)
    if pa.types.is_floating(target) and numeric_source and not pa.types.is_boolean(source):
        try:
            return values.cast(target)
        except pa.ArrowInvalid:  # a whole number beyond 2**53 has no exact float: a time or rate that large is wrong
            problems.add(
                f"{table}: a whole number too large to be a measurement (over 2**53)",
                f"write {column} in the documented unit (seconds, fractions)",
                column=column,
            )
            return pa.chunked_array([pa.nulls(len(values), target)])
    if pa.types.is_integer(target) and (pa.types.is_integer(source) or pa.types.is_floating(source)):
        try:
            return values.cast(target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            row = _first_bad_integer(values, target)
            problems.add(
                f"{table}: value {_short(_value_at(values, row))} is not a whole number that fits in {target}",
                "write whole numbers (no fractions, not astronomically large)",
                row=None if row is None else row + 1,
                column=column,
            )
            return pa.chunked_array([pa.nulls(len(values), target)])
    if pa.types.is_string(source) or pa.types.is_large_string(source):
        row = _first_unparsable(values, target)
        example = f"text {_short(_value_at(values, row))}" if row is not None else "text (quoted numbers)"
        problems.add(
            f"{table}: {example} where a {_type_word(target)} is expected",
            f"write {column} as a {_type_word(target)}",
            row=None if row is None else row + 1,
            column=column,
        )
        return pa.chunked_array([pa.nulls(len(values), target)])
    problems.add(
        f"{table}: column has type {source}, expected {_type_word(target)}",
        f"write {column} as a {_type_word(target)}",
        column=column,
    )
    return pa.chunked_array([pa.nulls(len(values), target)])


def _type_word(target: pa.DataType) -> str:
    if pa.types.is_integer(target):
        return "whole number"
    if pa.types.is_floating(target):
        return "number"
    return "text"


def _value_at(values: pa.ChunkedArray, row: int | None) -> Any:
    return None if row is None else values[row].as_py()


def _first_bad_integer(values: pa.ChunkedArray, target: pa.DataType) -> int | None:
    info = {pa.int32(): (-(2**31), 2**31 - 1), pa.int64(): (-(2**63), 2**63 - 1)}
    low, high = info.get(target, (-(2**63), 2**63 - 1))
    for index, value in enumerate(values.to_pylist()):
        if value is None:
            continue
        if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
            return index
        if not low <= int(value) <= high:
            return index
    return None


def _first_unparsable(values: pa.ChunkedArray, target: pa.DataType) -> int | None:
    convert: Callable[[str], Any] = int if pa.types.is_integer(target) else float
    for index, value in enumerate(values.to_pylist()):
        if value is None:
            continue
        try:
            convert(value)
        except (TypeError, ValueError):
            return index
    return None


def _first_true(mask: pa.ChunkedArray | pa.Array) -> int | None:
    """Index of the first true value (nulls count as false), or None."""
    mask = pc.fill_null(mask, False)
    index = pc.index(mask, True).as_py()
    return None if index is None or index < 0 else int(index)


def _check_values(name: str, table: pa.Table, limits: Limits, problems: _Collector) -> None:
    n = table.num_rows
    if n == 0:
        return
    for column in NOT_NULL[name]:
        row = _first_true(pc.is_null(table.column(column)))
        if row is not None:
            problems.add(f"{name}: empty value", f"fill in {column} on every row", row=row + 1, column=column)
    for schema_field in table.schema:
        column, values = schema_field.name, table.column(schema_field.name)
        if pa.types.is_floating(schema_field.type):
            row = _first_true(pc.invert(pc.is_finite(values)))
            if row is not None:
                problems.add(
                    f"{name}: {values[row].as_py()} is not a finite number",
                    "write a finite value, or leave the cell empty where the value is unknown",
                    row=row + 1,
                    column=column,
                )
                continue
        if column in TIME_COLUMNS:
            row = _first_true(pc.less(values, 0.0))
            if row is not None:
                problems.add(
                    f"{name}: negative time {values[row].as_py()}",
                    "times are seconds since the run's start; subtract the start time, not the other way round",
                    row=row + 1,
                    column=column,
                )
            row = _first_true(pc.greater(values, limits.max_time_s))
            if row is not None:
                problems.add(
                    f"{name}: time {values[row].as_py()} s is beyond the {limits.max_time_s:g} s limit",
                    "times are seconds since the run's start (not epoch seconds or milliseconds)",
                    row=row + 1,
                    column=column,
                )
        if column in FRACTION_COLUMNS:
            row = _first_true(pc.or_(pc.less(values, 0.0), pc.greater(values, 1.0 + 1e-9)))
            if row is not None:
                value = values[row].as_py()
                hint = "divide by 100: utilisations are fractions 0..1" if 1.0 < value <= 100.0 else "use 0..1"
                problems.add(f"{name}: {value} is outside 0..1", hint, row=row + 1, column=column)
        if column in NON_NEGATIVE:
            row = _first_true(pc.less(values, 0))
            if row is not None:
                problems.add(
                    f"{name}: negative value {values[row].as_py()}",
                    "counts cannot be negative",
                    row=row + 1,
                    column=column,
                )
    if name == "engine_samples":
        _check_monotonic(name, table, "t_s", problems, "sort the rows by t_s")
        for column in COUNTER_COLUMNS:
            _check_monotonic(
                name, table, column, problems, "counters are cumulative; a drop means a restart: split the run there"
            )
    elif name == "gpu_samples":
        _check_monotonic(name, table, "t_s", problems, "sort the rows by t_s")
    elif name == "requests":
        _check_requests(table, limits, problems)


def _check_monotonic(name: str, table: pa.Table, column: str, problems: _Collector, fix: str) -> None:
    values = table.column(column)
    if table.num_rows < 2 or values.null_count == len(values):
        return
    values = values.combine_chunks()
    if values.null_count:
        values = values.filter(pc.is_valid(values))
    row = _first_true(pc.less(values[1:], values[:-1]))
    if row is not None:
        problems.add(
            f"{name}: {values[row + 1].as_py()} comes after {values[row].as_py()} (goes backwards)",
            fix,
            row=row + 2,
            column=column,
        )


def _check_requests(table: pa.Table, limits: Limits, problems: _Collector) -> None:
    ids = table.column("request_id")
    if pc.count_distinct(ids).as_py() != len(ids) - ids.null_count:
        counts = pc.value_counts(ids)
        duplicated = next(
            item["values"].as_py() for item in counts if item["counts"].as_py() > 1 and item["values"].is_valid
        )
        first = _first_true(pc.equal(ids, duplicated))
        row = None if first is None else _first_true(pc.equal(ids.slice(first + 1), duplicated))
        row = None if row is None or first is None else first + 1 + row
        problems.add(
            f"requests: request id {_short(duplicated)} appears more than once",
            "give every request its own id",
            row=None if row is None else row + 1,
            column="request_id",
        )
    for column in ("isl", "osl"):
        values = table.column(column)
        row = _first_true(pc.or_(pc.less(values, 1), pc.greater(values, limits.max_tokens)))
        if row is not None:
            problems.add(
                f"requests: length {values[row].as_py()} is outside 1..{limits.max_tokens:,}",
                "write token counts (not characters), at least 1",
                row=row + 1,
                column=column,
            )
    row = _first_true(pc.greater(table.column("output_tokens"), limits.max_tokens))
    if row is not None:
        problems.add(
            "requests: output token count is too large", "write token counts", row=row + 1, column="output_tokens"
        )
    order = ("arrival_s", "first_scheduled_s", "first_token_s", "finished_s")
    for earlier_index, earlier in enumerate(order):
        for later in order[earlier_index + 1 :]:
            row = _first_true(pc.less(pc.add(table.column(later), 1e-9), table.column(earlier)))
            if row is not None:
                problems.add(
                    f"requests: {later} ({table.column(later)[row].as_py()}) is before {earlier} "
                    f"({table.column(earlier)[row].as_py()})",
                    f"a request's times must go arrival ≤ first scheduled ≤ first token ≤ finished; check {later}",
                    row=row + 1,
                    column=later,
                )
