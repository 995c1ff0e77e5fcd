"""The timeline rollup: each run's engine samples pre-aggregated at ingest into at most FINE_BUCKETS time buckets.

A dashboard asks for ~1,000 points per series; scanning a 10 M-row run for each redraw costs seconds on a laptop.
So ingest stores, per fine bucket, every gauge's minimum and maximum with their times and every counter's first and
last value. A timeline query merges fine buckets into the N it was asked for — min of minima and max of maxima are
exact, so peaks survive — reading at most FINE_BUCKETS rows per run. Runs with at most FINE_BUCKETS samples get one
bucket per sample, so nothing is lost for them.
"""

from __future__ import annotations

FINE_BUCKETS = 4096
GAUGES = ("running", "waiting", "kv_usage")
COUNTERS = ("prompt_tokens_total", "generation_tokens_total", "preemptions_total")
RATES = {"prompt_tokens_per_s": "prompt_tokens_total", "generation_tokens_per_s": "generation_tokens_total"}
_GAUGE_TYPES = {"running": "INTEGER", "waiting": "INTEGER", "kv_usage": "DOUBLE"}

ROLLUP_DDL = (
    "CREATE TABLE engine_timeline (\n  run_id VARCHAR NOT NULL, bucket INTEGER NOT NULL, "
    "t_first DOUBLE, t_last DOUBLE,\n  "
    + ",\n  ".join(
        f"{g}_tmin DOUBLE, {g}_min {_GAUGE_TYPES[g]}, {g}_tmax DOUBLE, {g}_max {_GAUGE_TYPES[g]}" for g in GAUGES
    )
    + ",\n  "
    + ",\n  ".join(f"{c}_first BIGINT, {c}_last BIGINT" for c in COUNTERS)
    + "\n)"
)

_FROM_SAMPLES = ",\n        ".join(
    [
        "min(t_s) AS t_first, max(t_s) AS t_last",
        *(
            f"arg_min(t_s, {g}) AS {g}_tmin, min({g}) AS {g}_min, arg_max(t_s, {g}) AS {g}_tmax, max({g}) AS {g}_max"
            for g in GAUGES
        ),
        *(f"min({c}) AS {c}_first, max({c}) AS {c}_last" for c in COUNTERS),
    ]
)

_MERGE = ",\n        ".join(
    [
        "min(t_first) AS t_first, max(t_last) AS t_last",
        *(
            f"arg_min({g}_tmin, {g}_min) AS {g}_tmin, min({g}_min) AS {g}_min, "
            f"arg_max({g}_tmax, {g}_max) AS {g}_tmax, max({g}_max) AS {g}_max"
            for g in GAUGES
        ),
        *(f"min({c}_first) AS {c}_first, max({c}_last) AS {c}_last" for c in COUNTERS),
    ]
)


def rollup_insert_sql(source: str, *, one_bucket_per_sample: bool) -> str:
    """INSERT the rollup of ``source`` (a fixed relation name: the registered incoming table or engine_samples
    filtered by ``$run_id``) for run ``$run_id``."""
    if one_bucket_per_sample:
        bucket = "(row_number() OVER (ORDER BY t_s) - 1)::INTEGER"
        inner = f"SELECT *, {bucket} AS bucket FROM {source}"
    else:
        inner = f"""SELECT s.*, least(floor((t_s - t0) / width * {FINE_BUCKETS}), {FINE_BUCKETS - 1})::INTEGER AS bucket
            FROM {source} s, (SELECT min(t_s) AS t0, greatest(max(t_s) - min(t_s), 1e-9) AS width FROM {source})"""
    return f"""INSERT INTO engine_timeline
    SELECT $run_id AS run_id, bucket,
        {_FROM_SAMPLES}
    FROM ({inner}) GROUP BY bucket"""


def _series_union() -> str:
    parts = []
    for g in GAUGES:
        parts.append(f"SELECT '{g}' AS series, {g}_tmin AS t_s, {g}_min::DOUBLE AS value FROM b")
        parts.append(f"SELECT '{g}', {g}_tmax, {g}_max::DOUBLE FROM b WHERE {g}_tmax IS DISTINCT FROM {g}_tmin")
    for c in COUNTERS:
        parts.append(f"SELECT '{c}', t_last, {c}_last::DOUBLE FROM b")
    for rate, c in RATES.items():
        parts.append(
            f"""SELECT '{rate}', t_last,
                ({c}_last - coalesce(lag({c}_last) OVER w, {c}_first))::DOUBLE
                  / nullif(t_last - coalesce(lag(t_last) OVER w, t_first), 0)
            FROM b WHERE {c}_last IS NOT NULL WINDOW w AS (ORDER BY bucket)"""
        )
    return "\nUNION ALL\n".join(parts)


TIMELINE_SQL = f"""
WITH f AS (
    SELECT * FROM engine_timeline WHERE run_id = $run_id
), n AS (
    SELECT max(bucket) + 1 AS fine FROM f
), b AS MATERIALIZED (
    SELECT (bucket::BIGINT * $buckets // fine)::INTEGER AS bucket,
        {_MERGE}
    FROM f, n GROUP BY 1
), out AS (
{_series_union()}
)
SELECT $run_id AS run_id, series, t_s, value FROM out WHERE value IS NOT NULL AND t_s IS NOT NULL
ORDER BY series, t_s
"""
