"""Stored calibrations (issue #6): which runs a fit used, the fitted parameters, the residuals, when.

The table is created on first save (``CREATE TABLE IF NOT EXISTS``), so databases written before it existed keep
working and need no migration; reads on such a database return nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import duckdb
import polars as pl

DDL = """
CREATE TABLE IF NOT EXISTS calibrations (
    calibration_id VARCHAR PRIMARY KEY,
    device_key VARCHAR NOT NULL,      -- hardware group: CPU model + threads, or the GPU model
    vllm_version VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    fitter VARCHAR NOT NULL,          -- method and version of the fit
    run_ids VARCHAR NOT NULL,         -- JSON list of the runs it was fitted on
    params VARCHAR NOT NULL,          -- JSON object: every Calibration parameter it sets
    fitted VARCHAR NOT NULL,          -- JSON list: the parameters the fit moved (the rest kept their default)
    loss DOUBLE,
    loss_start DOUBLE,
    evaluations INTEGER,
    residuals VARCHAR,                -- JSON: run_id -> figure -> log(predicted / measured)
    source VARCHAR NOT NULL           -- the text every prediction made with it carries
)
"""
COLUMNS = (
    "calibration_id",
    "device_key",
    "vllm_version",
    "created_at",
    "fitter",
    "run_ids",
    "params",
    "fitted",
    "loss",
    "loss_start",
    "evaluations",
    "residuals",
    "source",
)
JSON_COLUMNS = ("run_ids", "params", "fitted", "residuals")


def _exists(cur: duckdb.DuckDBPyConnection) -> bool:
    rows = cur.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'calibrations' AND table_schema = 'main' "
        "AND table_catalog = current_database()"
    ).fetchall()
    return bool(rows[0][0])


def save(cur: duckdb.DuckDBPyConnection, record: dict[str, Any]) -> str:
    """Insert one calibration record (keys of COLUMNS but the id); returns its id (a hash of its content)."""
    missing = [c for c in COLUMNS[1:] if c not in record]
    if missing:
        raise ValueError(f"calibration record lacks {missing}")
    body = json.dumps({c: record[c] for c in COLUMNS[1:]}, sort_keys=True, default=str)
    calibration_id = "cal-" + hashlib.sha256(body.encode()).hexdigest()[:12]
    values = [calibration_id] + [
        json.dumps(record[c], sort_keys=True) if c in JSON_COLUMNS else record[c] for c in COLUMNS[1:]
    ]
    cur.execute(DDL)
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
    if not _exists(cur):
        return pl.DataFrame(schema={c: pl.String for c in COLUMNS})
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
    if not _exists(cur):
        return None
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
