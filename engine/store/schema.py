"""The database's tables, their version, and the migrations that bring an older file up to date in place.

Version history:

- 0 — the first sketch (DESIGN.md): ``runs`` with ``model`` (name), no config, no provenance; no version table.
- 1 — ``runs`` carries every run.json field (model_config as JSON text), provenance (origin, content hash, file,
  missing fields, extra keys) and row counts; ``schema_version`` table.
- 2 — ``engine_timeline``: each run's samples pre-aggregated into fine time buckets (engine.store.rollup), so a
  downsampled timeline reads thousands of rows instead of millions. (``calibrations`` was created on first save,
  outside the versions, by engine.store.calibrations.)
- 3 — ``calibrations`` is part of the schema, with ``origin``: where a stored calibration came from (fitted in this
  database by a command or the dashboard, or loaded with the bundled runs). A v2 file's lazily created table is
  rebuilt with its rows kept.
- 4 — ``published``: one row per published run (engine.formats.published): kind, source URL/citation, date, quote
  lines, the stated and unstated server/client flags, the figures, and the record's TOML text verbatim. Older files
  get the empty table; their runs are untouched.

A migration is one function per step, run inside a transaction: either the file is upgraded or left as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import duckdb

from engine.bundle import ENGINE_SAMPLES, GPU_SAMPLES, REQUESTS, RUN_FIELDS
from engine.store.rollup import FINE_BUCKETS, ROLLUP_DDL, rollup_insert_sql

SCHEMA_VERSION = 4
CALIBRATIONS_SINCE = 3  # the first version with the calibrations table in the schema
APP_TAG = "cliffscope"

_SQL_TYPES = {
    "double": "DOUBLE",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "string": "VARCHAR",
}

# run.json fields whose values are objects, stored as JSON text.
JSON_RUN_FIELDS = ("model_config", "device_profile")
# run.json int fields that can exceed 32 bits.
BIG_INT_FIELDS = ("kv_cache_memory_bytes", "kv_capacity_tokens", "kv_blocks", "seed")

PROVENANCE_COLUMNS: dict[str, str] = {
    "origin": "VARCHAR NOT NULL",  # the reader: bundle, vllm-bench-json, prometheus-text, ...
    "source_file": "VARCHAR",  # display name of the file it came from
    "content_sha256": "VARCHAR NOT NULL",  # identity of the input, for idempotent re-ingest
    "ingested_at": "TIMESTAMP NOT NULL",
    "missing_fields": "VARCHAR",  # JSON list of run fields the source format did not carry
    "extra_json": "VARCHAR",  # run.json keys this version does not know, kept verbatim
    "engine_samples_rows": "BIGINT NOT NULL DEFAULT 0",
    "requests_rows": "BIGINT NOT NULL DEFAULT 0",
    "gpu_samples_rows": "BIGINT NOT NULL DEFAULT 0",
}


def run_field_sql_type(name: str) -> str:
    types = RUN_FIELDS[name][0]
    if name in JSON_RUN_FIELDS:
        return "VARCHAR"
    if bool in types:
        return "BOOLEAN"
    if float in types:
        return "DOUBLE"
    if int in types:
        return "BIGINT" if name in BIG_INT_FIELDS else "INTEGER"
    return "VARCHAR"


def runs_columns() -> dict[str, str]:
    """Column name -> SQL type of the v1 ``runs`` table (run.json fields, then provenance)."""
    columns = {name: run_field_sql_type(name) for name in RUN_FIELDS}
    columns["run_id"] = "VARCHAR PRIMARY KEY"
    for required in ("name", "source", "status"):
        columns[required] += " NOT NULL"
    columns.update(PROVENANCE_COLUMNS)
    return columns


def table_columns(schema_name: str) -> list[tuple[str, str]]:
    schema = {"engine_samples": ENGINE_SAMPLES, "requests": REQUESTS, "gpu_samples": GPU_SAMPLES}[schema_name]
    return [(f.name, _SQL_TYPES[str(f.type)]) for f in schema]


def _create_table_sql(name: str, columns: list[tuple[str, str]]) -> str:
    body = ",\n  ".join(f"{column} {sql_type}" for column, sql_type in columns)
    return f"CREATE TABLE {name} (\n  {body}\n)"


DERIVED_TABLES = ("engine_timeline",)  # rebuilt from engine_samples; deleted with their run
ATTACHED_TABLES = ("published",)  # one row beside a run, deleted with it

# Published runs (v4, issue #11): what a public record states beside its run row. JSON columns hold lists/objects.
PUBLISHED_COLUMNS: dict[str, str] = {
    "run_id": "VARCHAR PRIMARY KEY",
    "format": "VARCHAR NOT NULL",  # cliffscope-published/1
    "kind": "VARCHAR NOT NULL",  # startup | bench | paper
    "url": "VARCHAR",
    "citation": "VARCHAR",
    "publisher": "VARCHAR",
    "source_date": "VARCHAR",
    "checked": "VARCHAR NOT NULL",
    "quote_json": "VARCHAR NOT NULL",
    "approximate_json": "VARCHAR",
    "gpu": "VARCHAR NOT NULL",
    "num_gpus": "INTEGER NOT NULL",
    "vllm_version": "VARCHAR NOT NULL",  # "unstated" when the source does not say
    "model_name": "VARCHAR NOT NULL",
    "hf_id": "VARCHAR",
    "server_json": "VARCHAR NOT NULL",
    "server_unstated_json": "VARCHAR NOT NULL",
    "client_json": "VARCHAR NOT NULL",
    "client_unstated_json": "VARCHAR NOT NULL",
    "workload_json": "VARCHAR NOT NULL",
    "env_json": "VARCHAR NOT NULL",
    "figures_json": "VARCHAR NOT NULL",
    "record_toml": "VARCHAR NOT NULL",
}
PUBLISHED_SINCE = 4

# Fitted calibrations (issue #6): which runs a fit used, the fitted parameters, the residuals, when, and from where.
CALIBRATION_COLUMNS: dict[str, str] = {
    "calibration_id": "VARCHAR PRIMARY KEY",  # a hash of the record's content (everything but origin)
    "device_key": "VARCHAR NOT NULL",  # hardware group: CPU model + threads (+ ranks), or the GPU model
    "vllm_version": "VARCHAR NOT NULL",
    "created_at": "TIMESTAMP NOT NULL",  # when it was fitted
    "fitter": "VARCHAR NOT NULL",  # method and version of the fit
    "run_ids": "VARCHAR NOT NULL",  # JSON list of the runs it was fitted on
    "params": "VARCHAR NOT NULL",  # JSON object: every Calibration parameter it sets
    "fitted": "VARCHAR NOT NULL",  # JSON list: the parameters the fit moved (the rest kept their default)
    "loss": "DOUBLE",
    "loss_start": "DOUBLE",
    "evaluations": "INTEGER",
    "residuals": "VARCHAR",  # JSON: run_id -> figure -> log(predicted / measured)
    "source": "VARCHAR NOT NULL",  # the text every prediction made with it carries
    "origin": "VARCHAR NOT NULL",  # how it got into this database (v3)
}
CALIBRATIONS_DDL = _create_table_sql("calibrations", list(CALIBRATION_COLUMNS.items()))
PUBLISHED_DDL = _create_table_sql("published", list(PUBLISHED_COLUMNS.items()))
# The table as v2's engine.store.calibrations created it on first save (v3's without origin), kept so that the
# migration is tested against a real old file.
V2_CALIBRATIONS_DDL = _create_table_sql(
    "calibrations", [(k, v) for k, v in CALIBRATION_COLUMNS.items() if k != "origin"]
)
# Origin given to the rows of a v2 file, which did not record one.
V2_CALIBRATION_ORIGIN = "fitted in this database before schema v3 (which command was not recorded)"


def v1_ddl() -> list[str]:
    statements = [
        "CREATE TABLE schema_version (version INTEGER NOT NULL, app VARCHAR NOT NULL, migrated_at TIMESTAMP NOT NULL)",
        _create_table_sql("runs", list(runs_columns().items())),
    ]
    for table in ("engine_samples", "requests", "gpu_samples"):
        statements.append(_create_table_sql(table, [("run_id", "VARCHAR NOT NULL"), *table_columns(table)]))
    return statements


# The v0 sketch, kept so that migration can be tested against a real old file and so that one is recognised.
V0_DDL = [
    """CREATE TABLE runs (
  run_id VARCHAR PRIMARY KEY, name VARCHAR, source VARCHAR, created_at VARCHAR, status VARCHAR, host VARCHAR,
  device VARCHAR, num_devices INTEGER, model VARCHAR, dtype VARCHAR, dp INTEGER, tp INTEGER, pp INTEGER,
  max_num_seqs INTEGER, max_num_batched_tokens INTEGER, block_size INTEGER, gpu_memory_utilization DOUBLE,
  kv_capacity_tokens BIGINT, num_requests INTEGER, workload VARCHAR, vllm_version VARCHAR, notes VARCHAR
)""",
    """CREATE TABLE engine_samples (
  run_id VARCHAR, t_s DOUBLE, running INTEGER, waiting INTEGER, kv_usage DOUBLE, prompt_tokens_total BIGINT,
  generation_tokens_total BIGINT, preemptions_total BIGINT
)""",
    """CREATE TABLE gpu_samples (
  run_id VARCHAR, t_s DOUBLE, gpu_index INTEGER, sm_util DOUBLE, mem_bw_util DOUBLE, mem_used_bytes BIGINT,
  power_w DOUBLE
)""",
    """CREATE TABLE requests (
  run_id VARCHAR, request_id VARCHAR, isl INTEGER, osl INTEGER, arrival_s DOUBLE, first_scheduled_s DOUBLE,
  first_token_s DOUBLE, finished_s DOUBLE, num_preemptions INTEGER
)""",
]
V0_TABLES = {"runs", "engine_samples", "gpu_samples", "requests"}
# run fields v0 never stored: null after migration and listed in the run's missing_fields.
V0_MISSING_FIELDS = [
    "enable_chunked_prefill",
    "kv_cache_dtype",
    "max_model_len",
    "model_config",
    "model_config_sha256",
    "seed",
]


class SchemaError(RuntimeError):
    """The database file is not one this version of cliffscope can use; the message says what to do."""


def table_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_catalog = "
        "current_database()"
    ).fetchall()
    return {row[0] for row in rows}


def current_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The file's schema version; None for an empty database. Raises SchemaError for a foreign one."""
    tables = table_names(con)
    if not tables:
        return None
    if "schema_version" in tables:
        rows = con.execute("SELECT max(version), any_value(app) FROM schema_version").fetchall()
        version, app = rows[0]
        if version is None or app != APP_TAG:
            raise SchemaError("its schema_version table was not written by cliffscope")
        return int(version)
    if tables == V0_TABLES:
        columns = {
            row[0]
            for row in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'runs'"
            ).fetchall()
        }
        if {"run_id", "model", "workload"} <= columns:
            return 0
    raise SchemaError(f"it holds tables cliffscope did not create ({', '.join(sorted(tables))})")


def _migrate_0_to_1(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("ALTER TABLE runs RENAME TO runs_v0")
    for statement in v1_ddl():
        if statement.startswith("CREATE TABLE runs ") or statement.startswith("CREATE TABLE schema_version"):
            con.execute(statement)
    # v0 stored the model's name only; the config is unknown for those runs and stays null.
    con.execute(
        """
        INSERT INTO runs (run_id, bundle_version, name, source, status, created_at, host, device, num_devices,
            model_name, dtype, dp, tp, pp, max_num_seqs, max_num_batched_tokens, block_size, gpu_memory_utilization,
            kv_capacity_tokens, num_requests, workload, vllm_version, notes,
            origin, source_file, content_sha256, ingested_at, missing_fields,
            engine_samples_rows, requests_rows, gpu_samples_rows)
        SELECT r.run_id, 1, coalesce(r.name, r.run_id), coalesce(r.source, 'collector'), coalesce(r.status, 'complete'),
            r.created_at, r.host, r.device, r.num_devices, r.model, r.dtype, r.dp, r.tp, r.pp, r.max_num_seqs,
            r.max_num_batched_tokens, r.block_size, r.gpu_memory_utilization, r.kv_capacity_tokens, r.num_requests,
            r.workload, r.vllm_version, r.notes,
            'schema-v0', NULL, 'schema-v0:' || r.run_id, now()::TIMESTAMP,
            ?,
            (SELECT count(*) FROM engine_samples e WHERE e.run_id = r.run_id),
            (SELECT count(*) FROM requests q WHERE q.run_id = r.run_id),
            (SELECT count(*) FROM gpu_samples g WHERE g.run_id = r.run_id)
        FROM runs_v0 r
        """,
        [json.dumps(V0_MISSING_FIELDS)],
    )
    con.execute("DROP TABLE runs_v0")
    # Per-request output counts arrived with v1 (v0 assumed osl was produced); keep v0's rows as they were.
    con.execute("ALTER TABLE requests ADD COLUMN output_tokens INTEGER")
    con.execute("UPDATE requests SET output_tokens = osl WHERE finished_s IS NOT NULL")
    _reorder_requests(con)


def _reorder_requests(con: duckdb.DuckDBPyConnection) -> None:
    """Rebuild ``requests`` in the v1 column order, so ``SELECT *`` matches the bundle schema."""
    columns = ["run_id", *(name for name, _ in table_columns("requests"))]
    con.execute(_create_table_sql("requests_v1", [("run_id", "VARCHAR NOT NULL"), *table_columns("requests")]))
    con.execute(f"INSERT INTO requests_v1 SELECT {', '.join(columns)} FROM requests")
    con.execute("DROP TABLE requests")
    con.execute("ALTER TABLE requests_v1 RENAME TO requests")


def _column_names(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main' "
        "AND table_catalog = current_database() ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return [row[0] for row in rows]


def _migrate_2_to_3(con: duckdb.DuckDBPyConnection) -> None:
    if "calibrations" not in table_names(con):
        con.execute(CALIBRATIONS_DDL)
        return
    found = _column_names(con, "calibrations")
    expected = [c for c in CALIBRATION_COLUMNS if c != "origin"]
    if found != expected:
        raise SchemaError(
            f"its calibrations table has columns {found}, not the {expected} cliffscope wrote before schema 3"
        )
    con.execute("ALTER TABLE calibrations RENAME TO calibrations_v2")
    con.execute(CALIBRATIONS_DDL)
    con.execute("INSERT INTO calibrations SELECT *, ? FROM calibrations_v2", [V2_CALIBRATION_ORIGIN])
    con.execute("DROP TABLE calibrations_v2")


def _migrate_1_to_2(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(ROLLUP_DDL)
    runs = con.execute("SELECT run_id, engine_samples_rows FROM runs WHERE engine_samples_rows > 0").fetchall()
    for run_id, rows in runs:
        con.execute(rollup_insert_sql(_RUN_SAMPLES, one_bucket_per_sample=rows <= FINE_BUCKETS), {"run_id": run_id})


def _migrate_3_to_4(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(PUBLISHED_DDL)


# The one run's samples, as a relation the rollup can read during a migration ($run_id is bound by the caller).
_RUN_SAMPLES = "(SELECT * FROM engine_samples WHERE run_id = $run_id)"

MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {
    0: _migrate_0_to_1,
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
    3: _migrate_3_to_4,
}


def ensure_schema(con: duckdb.DuckDBPyConnection) -> tuple[int | None, int]:
    """Create the schema in an empty database, or migrate an older one; returns (version found, version now)."""
    found = current_version(con)
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaError(
            f"it was written by a newer cliffscope (schema {found}, this one reads up to {SCHEMA_VERSION})"
        )
    if found == SCHEMA_VERSION:
        return found, found
    con.execute("BEGIN TRANSACTION")
    try:
        if found is None:
            for statement in (*v1_ddl(), ROLLUP_DDL, CALIBRATIONS_DDL, PUBLISHED_DDL):
                con.execute(statement)
        else:
            for step in range(found, SCHEMA_VERSION):
                MIGRATIONS[step](con)
        con.execute("INSERT INTO schema_version VALUES (?, ?, now()::TIMESTAMP)", [SCHEMA_VERSION, APP_TAG])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return found, SCHEMA_VERSION
