"""Stored calibrations (issue #6): which runs a fit used, the fitted parameters, the residuals, when, and where the
row came from. The table is part of the schema (engine.store.schema, v3)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import duckdb
import polars as pl

from engine.store.schema import CALIBRATION_COLUMNS

COLUMNS = tuple(CALIBRATION_COLUMNS)
CONTENT_COLUMNS = tuple(c for c in COLUMNS if c not in ("calibration_id", "origin"))  # what the id is a hash of
JSON_COLUMNS = ("run_ids", "params", "fitted", "residuals")
DEFAULT_ORIGIN = "fitted in this database"


def calibration_id_of(record: dict[str, Any]) -> str:
    """A calibration's id: a hash of its content, so the same fit gets the same id in every database."""
    body = json.dumps({c: record[c] for c in CONTENT_COLUMNS}, sort_keys=True, default=str)
    return "cal-" + hashlib.sha256(body.encode()).hexdigest()[:12]


def save(cur: duckdb.DuckDBPyConnection, record: dict[str, Any]) -> str:
    """Insert one calibration record (keys of CONTENT_COLUMNS, ``origin`` optional); returns its id."""
    missing = [c for c in CONTENT_COLUMNS if c not in record]
    if missing:
        raise ValueError(f"calibration record lacks {missing}")
    calibration_id = calibration_id_of(record)
    row = {**record, "calibration_id": calibration_id, "origin": record.get("origin") or DEFAULT_ORIGIN}
    values = [json.dumps(row[c], sort_keys=True) if c in JSON_COLUMNS else row[c] for c in COLUMNS]
    cur.execute(
        f"INSERT INTO calibrations ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
        "ON CONFLICT (calibration_id) DO NOTHING",
        values,
    )
    return calibration_id


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for c in JSON_COLUMNS:
        if out.get(c) is not None:
            out[c] = json.loads(out[c])
    if out.get("created_at") is not None and hasattr(out["created_at"], "isoformat"):
        out["created_at"] = out["created_at"].isoformat()
    return out


def listing(
    cur: duckdb.DuckDBPyConnection, device_key: str | None = None, vllm_version: str | None = None
) -> pl.DataFrame:
    """Calibrations, newest first (JSON columns as text), optionally of one device and vLLM version."""
    where, params = ["TRUE"], {}
    if device_key is not None:
        where.append("device_key = $device_key")
        params["device_key"] = device_key
    if vllm_version is not None:
        where.append("vllm_version = $vllm_version")
        params["vllm_version"] = vllm_version
    sql = f"SELECT * FROM calibrations WHERE {' AND '.join(where)} ORDER BY created_at DESC, calibration_id"
    return pl.from_arrow(cur.sql(sql, params=params).to_arrow_table())  # type: ignore[return-value]


def get(cur: duckdb.DuckDBPyConnection, calibration_id: str) -> dict[str, Any] | None:
    result = cur.execute("SELECT * FROM calibrations WHERE calibration_id = ?", [calibration_id])
    names = [d[0] for d in result.description]
    rows = result.fetchall()
    return _decode(dict(zip(names, rows[0], strict=True))) if rows else None


def latest(cur: duckdb.DuckDBPyConnection, device_key: str, vllm_version: str | None = None) -> dict[str, Any] | None:
    """The newest calibration of a device (and vLLM version, when given)."""
    frame = listing(cur, device_key, vllm_version)
    if frame.height == 0:
        return None
    return get(cur, str(frame["calibration_id"][0]))
