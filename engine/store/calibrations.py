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


# ---------------------------------------------------------------------------------- calibrations shipped with runs
# A fit takes seconds per hardware group, too slow for a dashboard's first start. So the bundled runs come with the
# calibrations that `python -m engine calibrate --export` fitted on them, each naming the content hash of every run
# it used: a new database loads one only when it holds exactly those runs, with that content.

ARTEFACT_NAME = "calibrations.json"
ARTEFACT_VERSION = 1


def run_hashes(cur: duckdb.DuckDBPyConnection, run_ids: list[str]) -> dict[str, str | None]:
    """Each run's content hash as ingested (None for a run not in the database)."""
    rows = cur.execute("SELECT run_id, content_sha256 FROM runs WHERE run_id IN (SELECT unnest($ids))", {
        "ids": list(run_ids)
    }).fetchall()  # fmt: skip
    found = dict(rows)
    return {run_id: found.get(run_id) for run_id in run_ids}


def artefact(cur: duckdb.DuckDBPyConnection, records: list[dict[str, Any]], about: str) -> dict[str, Any]:
    """What ``calibrate --export`` writes: the fitted records as stored, each with its runs' content hashes."""
    out = []
    for record in records:
        hashes = run_hashes(cur, list(record["run_ids"]))
        missing = [run_id for run_id, sha in hashes.items() if sha is None]
        if missing:
            raise ValueError(f"calibration of {record['device_key']}: runs {missing} are not in the database")
        row = {c: record[c] for c in CONTENT_COLUMNS}
        out.append({"calibration_id": calibration_id_of(record), **row, "run_content_sha256": hashes})
    return {"cliffscope_calibrations": ARTEFACT_VERSION, "about": about, "calibrations": out}


def load_artefact(cur: duckdb.DuckDBPyConnection, data: Any, origin: str) -> list[str]:
    """Store each calibration of an exported artefact whose runs are all in this database with the content they
    were fitted on; returns one line per calibration saying what happened (a stale one is skipped, not fatal)."""
    if not isinstance(data, dict) or data.get("cliffscope_calibrations") != ARTEFACT_VERSION:
        return [f"not a cliffscope calibrations file of version {ARTEFACT_VERSION}: nothing loaded"]
    notes = []
    for record in data.get("calibrations") or []:
        label = f"calibration {record.get('calibration_id')} ({record.get('device_key')})"
        missing = [c for c in (*CONTENT_COLUMNS, "run_content_sha256") if c not in record]
        if missing:
            notes.append(f"{label}: skipped, the record lacks {missing}")
            continue
        if calibration_id_of(record) != record.get("calibration_id"):
            notes.append(f"{label}: skipped, its content does not hash to its id (edited by hand?)")
            continue
        wanted = record["run_content_sha256"]
        have = run_hashes(cur, list(record["run_ids"]))
        stale = [
            run_id for run_id in record["run_ids"] if have.get(run_id) is None or have[run_id] != wanted.get(run_id)
        ]
        if stale:
            notes.append(
                f"{label}: skipped, {len(stale)} of its runs are absent or differ from those it was fitted on "
                f"({', '.join(stale[:3])}); refit with `python -m engine calibrate`"
            )
            continue
        save(cur, {**{c: record[c] for c in CONTENT_COLUMNS}, "origin": origin})
        notes.append(f"{label}: loaded, fitted on {len(record['run_ids'])} run(s) at {record['created_at']}")
    return notes
