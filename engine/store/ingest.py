"""Write validated runs into the database: one transaction per input file, all of it or none of it.

Tables travel as registered Arrow tables under fixed names and values as bound parameters, so nothing from a file's
name or content ever becomes SQL text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import duckdb

from engine.bundle import RUN_FIELDS, TABLES
from engine.formats.model import ParsedRun, ValidationError
from engine.store.rollup import FINE_BUCKETS, rollup_insert_sql
from engine.store.schema import ATTACHED_TABLES, DERIVED_TABLES, JSON_RUN_FIELDS, PUBLISHED_COLUMNS, table_columns

INCOMING = "cliffscope_incoming"  # the fixed name an Arrow table is registered under while it is copied in


@dataclass(frozen=True)
class RunOutcome:
    """What happened to one run: ``added``, ``unchanged`` (same content already stored) or ``replaced``."""

    run_id: str
    action: str
    rows: dict[str, int] = field(default_factory=dict)


@dataclass
class IngestReport:
    """The result of ingesting one input file; ``error`` is set (and ``runs`` empty) when it was rejected."""

    file: str
    runs: list[RunOutcome] = field(default_factory=list)
    error: ValidationError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        if self.error is not None:
            return f"rejected {self.error}"
        parts = []
        for run in self.runs:
            if run.action == "unchanged":
                parts.append(f"{run.run_id}: already in the store, unchanged (nothing written)")
            else:
                counts = ", ".join(f"{n:,} {table}" for table, n in run.rows.items() if n)
                parts.append(f"{run.run_id}: {run.action} ({counts or 'no rows'})")
        if len(self.runs) == 1 and self.runs[0].run_id == self.file:
            return parts[0]
        return f"{self.file}: " + "; ".join(parts)


def _run_row(run: ParsedRun) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key in RUN_FIELDS:
        value = run.meta.get(key)
        if key in JSON_RUN_FIELDS and value is not None:
            value = json.dumps(value, sort_keys=True)
        row[key] = value
    row["origin"] = run.origin
    row["source_file"] = run.file
    row["content_sha256"] = run.content_sha256
    row["missing_fields"] = json.dumps(sorted(run.missing)) if run.missing else None
    row["extra_json"] = json.dumps(run.extra, sort_keys=True, default=str) if run.extra else None
    for table in TABLES:
        row[f"{table}_rows"] = run.tables[table].num_rows
    return row


def write_runs(con: duckdb.DuckDBPyConnection, runs: list[ParsedRun], *, replace: bool) -> list[RunOutcome]:
    """Write validated runs in one transaction. Raises ValidationError (nothing written) on a run-id conflict."""
    outcomes: list[RunOutcome] = []
    con.execute("BEGIN TRANSACTION")
    try:
        for run in runs:
            run_id = run.meta["run_id"]
            existing = con.execute("SELECT content_sha256 FROM runs WHERE run_id = ?", [run_id]).fetchall()
            if existing and existing[0][0] == run.content_sha256:
                outcomes.append(RunOutcome(run_id, "unchanged"))
                continue
            if existing and not replace:
                raise ValidationError.one(
                    run.file,
                    f"run id {run_id!r} is already in the store with different content",
                    "delete that run first (dashboard upload page or Store.delete_run), re-import with --replace, "
                    "or give this run another run_id",
                    column="run.run_id",
                )
            if existing:
                delete_run_rows(con, run_id)
            row = _run_row(run)
            columns = list(row)
            placeholders = ", ".join("?" for _ in columns) + ", now()::TIMESTAMP"
            con.execute(
                f"INSERT INTO runs ({', '.join(columns)}, ingested_at) VALUES ({placeholders})",
                list(row.values()),
            )
            rows: dict[str, int] = {}
            for table in TABLES:
                arrow = run.tables[table]
                rows[table] = arrow.num_rows
                if arrow.num_rows == 0:
                    continue
                names = [name for name, _ in table_columns(table)]
                con.register(INCOMING, arrow)
                try:
                    con.execute(
                        f"INSERT INTO {table} (run_id, {', '.join(names)}) "
                        f"SELECT ?, {', '.join(names)} FROM {INCOMING}",
                        [run_id],
                    )
                    if table == "engine_samples":
                        small = arrow.num_rows <= FINE_BUCKETS
                        con.execute(rollup_insert_sql(INCOMING, one_bucket_per_sample=small), {"run_id": run_id})
                finally:
                    con.unregister(INCOMING)
            if run.published is not None:
                _insert_published(con, run_id, run)
                rows["published"] = 1
            outcomes.append(RunOutcome(run_id, "replaced" if existing else "added", rows))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return outcomes


def delete_run_rows(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    """Delete one run and its rows (inside the caller's transaction). Returns whether it existed."""
    existed = bool(con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchall())
    for table in (*TABLES, *DERIVED_TABLES, *ATTACHED_TABLES):
        con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
    con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
    return existed


def _insert_published(con: duckdb.DuckDBPyConnection, run_id: str, run: ParsedRun) -> None:
    """The record's source, quotes, flags and figures beside its run (values bound, never SQL text)."""
    record = run.published
    dump = json.dumps
    row = {
        "run_id": run_id,
        "format": "cliffscope-published/1",
        "kind": record.kind.value,
        "url": record.source.url,
        "citation": record.source.citation,
        "publisher": record.source.publisher,
        "source_date": record.source.date,
        "checked": record.source.checked,
        "quote_json": dump(list(record.source.quote)),
        "approximate_json": dump(list(record.source.approximate)) if record.source.approximate else None,
        "gpu": record.gpu,
        "num_gpus": record.num_gpus,
        "vllm_version": record.vllm_version,
        "model_name": record.model_name,
        "hf_id": record.hf_id,
        "server_json": dump(record.server.as_dict(), sort_keys=True),
        "server_unstated_json": dump(list(record.server.unstated)),
        "client_json": dump(record.client.as_dict(), sort_keys=True),
        "client_unstated_json": dump(list(record.client.unstated)),
        "workload_json": dump(dict(record.workload), sort_keys=True),
        "env_json": dump(dict(record.env), sort_keys=True),
        "figures_json": dump(dict(record.figures), sort_keys=True),
        "record_toml": run.published_text,
    }
    assert list(row) == list(PUBLISHED_COLUMNS)
    con.execute(f"INSERT INTO published VALUES ({', '.join('?' for _ in row)})", list(row.values()))
