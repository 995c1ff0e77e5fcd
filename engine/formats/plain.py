"""Plain tables of samples or requests: CSV (with a header), JSON Lines, a JSON array of objects, or Parquet.

The columns say what the table is (docs/formats.md lists them): ``request_id``/``arrival_s`` make it requests,
``gpu_index`` GPU samples, ``t_s`` engine samples. Column names are the bundle's (``engine.bundle``). An optional
``run_id`` column splits the file into one run per value; without it the run id is derived from the file's content,
so importing the same file twice is recognised.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.bundle import TABLES
from engine.formats.bundles import read_parquet_bytes
from engine.formats.model import Limits, ParsedRun, ValidationError
from engine.formats.outside import content_sha256, outside_meta, safe_id_part

ORIGINS = {"csv": "plain-csv", "jsonl": "plain-jsonl", "json": "plain-json", "parquet": "plain-parquet"}
LABELS = {"csv": "a CSV table", "jsonl": "a JSON Lines table", "json": "a JSON table", "parquet": "a Parquet table"}


def table_kind(columns: list[str]) -> str | None:
    names = set(columns)
    if names & {"request_id", "arrival_s", "first_token_s", "finished_s"}:
        return "requests"
    if "gpu_index" in names:
        return "gpu_samples"
    if "t_s" in names:
        return "engine_samples"
    return None


def read_csv(data: bytes, display: str, limits: Limits) -> pa.Table:
    try:
        return pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                strings_can_be_null=True, column_types={"request_id": pa.string(), "run_id": pa.string()}
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError, ValueError) as exc:
        message = str(exc).splitlines()[0][:200]
        row = _row_from_message(message)
        raise ValidationError.one(
            display,
            f"not a readable CSV table ({message})",
            "save it as UTF-8 CSV with one header line and the same number of fields on every row",
            row=row,
        ) from None


def _row_from_message(message: str) -> int | None:
    import re

    match = re.search(r"[Rr]ow #?(\d+)", message)
    return int(match.group(1)) - 1 if match else None  # pyarrow counts the header as row 1


def read_records(records: list[Any], display: str) -> pa.Table:
    """A table from JSON objects; row numbers in messages are 1-based object positions."""
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValidationError.one(display, "not a JSON object", "write one object per line", row=index + 1)
    columns: dict[str, list[Any]] = {}
    for record in records:
        for key in record:
            columns.setdefault(str(key), [])
    for key in columns:
        columns[key] = [record.get(key) for record in records]
    arrays = {}
    for key, values in columns.items():
        try:
            arrays[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            row = _first_odd_type(values)
            raise ValidationError.one(
                display,
                f"values of mixed types (e.g. {values[row]!r})" if row is not None else "values of mixed types",
                "write every value of a column with one type (numbers unquoted)",
                row=None if row is None else row + 1,
                column=key,
            ) from None
        if pa.types.is_nested(arrays[key].type) or pa.types.is_binary(arrays[key].type):
            raise ValidationError.one(display, "nested values", "write plain numbers or text", column=key)
    return pa.table(arrays) if arrays else pa.table({})


def _first_odd_type(values: list[Any]) -> int | None:
    kinds = [type(v) for v in values if v is not None]
    if not kinds:
        return None
    common = max(set(kinds), key=kinds.count)
    for index, value in enumerate(values):
        if value is not None and (type(value) is not common or (isinstance(value, int) and abs(value) >= 2**63)):
            return index
    return None


def read_parquet(data: bytes, display: str, limits: Limits) -> pa.Table:
    return read_parquet_bytes(data, display, limits)


def split_runs(table: pa.Table, kind: str, fmt: str, data: bytes, display: str) -> list[ParsedRun]:
    """One ParsedRun per ``run_id`` value (or one for the whole table)."""
    if table.num_columns == 0 or table.num_rows == 0:
        raise ValidationError.one(display, "no rows", "upload a table with a header and at least one row")
    parts: list[tuple[str | None, pa.Table]]
    if "run_id" in table.column_names:
        ids = table.column("run_id")
        if ids.null_count:
            row = pc.index(pc.is_null(ids), True).as_py()
            raise ValidationError.one(
                display, "empty run_id", "fill in run_id on every row", row=row + 1, column="run_id"
            )
        ids = ids.cast(pa.string())
        parts = []
        for value in pc.unique(ids).to_pylist():
            parts.append((value, table.filter(pc.equal(ids, value)).drop_columns(["run_id"])))
    else:
        parts = [(None, table)]
    runs = []
    stem = display.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    for run_id, part in parts:
        sha = content_sha256(data, run_id or "")
        known: dict[str, Any] = {
            "run_id": run_id or f"{kind.split('_')[0]}-{safe_id_part(stem, 24)}-{sha[:12]}",
            "name": run_id or stem,
        }
        if kind == "requests":
            known["num_requests"] = part.num_rows
        notes = [f"Only {kind.replace('_', ' ')} were in the file."]
        meta, missing = outside_meta(known, origin_label=LABELS[fmt], notes=notes)
        runs.append(
            ParsedRun(
                meta=meta,
                tables={kind: part},
                origin=ORIGINS[fmt],
                file=display if run_id is None else f"{display} [run {run_id}]",
                content_sha256=sha,
                strict=False,
                missing=missing,
            )
        )
    return runs


def parse_jsonl(text: str, display: str) -> list[Any]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError) as exc:
            column = getattr(exc, "colno", None)
            raise ValidationError.one(
                display,
                f"line {number} is not valid JSON" + (f" (at character {column})" if column else ""),
                "write one JSON object per line",
                row=len(records) + 1,
            ) from None
    return records


KNOWN_TABLES = tuple(TABLES)
