"""Read queries. Each takes a cursor (one per query, so the dashboard's threads never share one) and returns
Polars frames via Arrow, or plain dicts. Downsampling happens in SQL so a 10 M-row run never leaves DuckDB whole.

Derived request metrics (seconds):
    ttft  = first_token_s - arrival_s
    tpot  = (finished_s - first_token_s) / (output_tokens - 1)     (requests with at least 2 output tokens)
    e2e   = finished_s - arrival_s
    queue = first_scheduled_s - arrival_s
``output_tokens`` falls back to ``osl`` for finished requests whose producer did not record it (runs with
``ignore_eos`` produce exactly ``osl``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import polars as pl

from engine.bundle import RUN_FIELDS
from engine.store.rollup import COUNTERS, GAUGES, RATES, TIMELINE_SQL
from engine.store.schema import JSON_RUN_FIELDS
from engine.summary import SUMMARY_KEYS

TIMELINE_SERIES = (*GAUGES, *COUNTERS, *RATES)
GPU_SERIES = ("sm_util", "mem_bw_util", "mem_used_bytes", "power_w")
REQUEST_METRICS = ("ttft_s", "tpot_s", "e2e_s", "queue_s")


RUN_LIST_COLUMNS = (
    "run_id, name, source, status, created_at, model_name, device, num_devices, dp, tp, pp, "
    "'DP' || dp || '·TP' || tp || '·PP' || pp AS layout, max_num_seqs, kv_capacity_tokens, num_requests, workload, "
    "seed, vllm_version, origin, source_file, missing_fields, engine_samples_rows, requests_rows, gpu_samples_rows, "
    "ingested_at"
)

REQUESTS_DERIVED = """
    SELECT request_id, isl, osl, output_tokens, arrival_s, first_scheduled_s, first_token_s, finished_s,
        num_preemptions,
        first_token_s - arrival_s AS ttft_s,
        CASE WHEN finished_s IS NOT NULL AND coalesce(output_tokens, osl) > 1
             THEN (finished_s - first_token_s) / (coalesce(output_tokens, osl) - 1) END AS tpot_s,
        finished_s - arrival_s AS e2e_s,
        first_scheduled_s - arrival_s AS queue_s
    FROM requests WHERE run_id = $run_id
"""


def _frame(cur: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> pl.DataFrame:
    return pl.from_arrow(cur.sql(sql, params=params).to_arrow_table())  # type: ignore[return-value]


def parse_layout(layout: str | Sequence[int]) -> tuple[int, int, int]:
    """A layout as (dp, tp, pp) from a tuple or text such as 'DP2·TP4·PP1', 'dp2-tp4-pp1' or '2x4x1'."""
    if not isinstance(layout, str):
        dp, tp, pp = (int(v) for v in layout)
        return dp, tp, pp
    text = layout.lower()
    named = dict(re.findall(r"(dp|tp|pp)\s*=?\s*(\d+)", text))
    if len(named) == 3:
        return int(named["dp"]), int(named["tp"]), int(named["pp"])
    numbers = re.findall(r"\d+", text)
    if len(numbers) == 3:
        dp, tp, pp = (int(n) for n in numbers)
        return dp, tp, pp
    raise ValueError(f"layout {layout!r} is not DP·TP·PP; write e.g. 'DP2·TP4·PP1' or '2x4x1'")


def runs_list(
    cur: duckdb.DuckDBPyConnection,
    *,
    model: str | None = None,
    device: str | None = None,
    layout: str | Sequence[int] | None = None,
    source: str | None = None,
    status: str | None = None,
) -> pl.DataFrame:
    where, params = ["TRUE"], {}
    for key, column, value in (
        ("model", "model_name", model),
        ("device", "device", device),
        ("source", "source", source),
        ("status", "status", status),
    ):
        if value is not None:
            where.append(f"{column} = ${key}")
            params[key] = value
    if layout is not None:
        params["dp"], params["tp"], params["pp"] = parse_layout(layout)
        where.append("dp = $dp AND tp = $tp AND pp = $pp")
    # Published runs carry their source's address (or citation) so every list can link to it.
    sql = (
        f"SELECT {RUN_LIST_COLUMNS}, published_kind, source_ref FROM runs LEFT JOIN (SELECT run_id, "
        "kind AS published_kind, coalesce(url, citation) AS source_ref FROM published) USING (run_id) "
        f"WHERE {' AND '.join(where)} ORDER BY created_at DESC, run_id"
    )
    return _frame(cur, sql, params)


PUBLISHED_JSON_COLUMNS = (
    "quote_json", "approximate_json", "server_json", "server_unstated_json", "client_json", "client_unstated_json",
    "workload_json", "env_json", "figures_json",
)  # fmt: skip


def published_record(cur: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any] | None:
    """A published run's stored record (JSON columns parsed, without the ``_json`` suffix); None if not published."""
    result = cur.execute("SELECT * FROM published WHERE run_id = ?", [run_id])
    names = [d[0] for d in result.description]
    rows = result.fetchall()
    if not rows:
        return None
    out: dict[str, Any] = {}
    for name, value in zip(names, rows[0], strict=True):
        if name in PUBLISHED_JSON_COLUMNS:
            out[name.removesuffix("_json")] = json.loads(value) if value is not None else None
        else:
            out[name] = value
    return out


def published_list(cur: duckdb.DuckDBPyConnection, kind: str | None = None) -> pl.DataFrame:
    """Every published run: id, kind, GPU, model, layout, source and figures (JSON text), by kind then id."""
    sql = (
        "SELECT p.run_id, p.kind, p.gpu, p.num_gpus, p.model_name, r.dp, r.tp, r.pp, "
        "'DP' || r.dp || '·TP' || r.tp || '·PP' || r.pp AS layout, p.vllm_version, "
        "coalesce(p.url, p.citation) AS source_ref, p.source_date, p.checked, p.figures_json, "
        "p.server_unstated_json FROM published p JOIN runs r USING (run_id) "
        "WHERE $kind IS NULL OR p.kind = $kind ORDER BY p.kind, p.run_id"
    )
    return _frame(cur, sql, {"kind": kind})


def run_meta(cur: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any] | None:
    """run.json as it was ingested (objects parsed back), plus provenance under ``_store``; None if unknown."""
    result = cur.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
    names = [d[0] for d in result.description]
    rows = result.fetchall()
    if not rows:
        return None
    record = dict(zip(names, rows[0], strict=True))
    meta: dict[str, Any] = {}
    for key in RUN_FIELDS:
        value = record[key]
        if key in JSON_RUN_FIELDS and value is not None:
            value = json.loads(value)
        meta[key] = value
    if record.get("extra_json"):
        meta.update(json.loads(record["extra_json"]))
    meta["_store"] = {
        "origin": record["origin"],
        "source_file": record["source_file"],
        "content_sha256": record["content_sha256"],
        "ingested_at": record["ingested_at"].isoformat() if record["ingested_at"] else None,
        "missing_fields": json.loads(record["missing_fields"]) if record["missing_fields"] else [],
        "rows": {t: record[f"{t}_rows"] for t in ("engine_samples", "requests", "gpu_samples")},
    }
    return meta


def timeline(cur: duckdb.DuckDBPyConnection, run_id: str, max_points: int = 1000) -> pl.DataFrame:
    """One run's engine timeline in long form (run_id, series, t_s, value), at most ``max_points`` per series.

    Reads the rollup written at ingest (engine.store.rollup), so the cost does not grow with the run's length.
    Gauges (running, waiting, kv_usage) keep each bucket's minimum and maximum with their times, so peaks and the
    cliff survive downsampling; counters keep each bucket's last value; rates (tokens/s) are the counter's increase
    between bucket ends over the time between them.
    """
    buckets = max(1, int(max_points) // 2)
    return _frame(cur, TIMELINE_SQL, {"run_id": run_id, "buckets": buckets})


def gpu_timeline(cur: duckdb.DuckDBPyConnection, run_id: str, max_points: int = 1000) -> pl.DataFrame:
    """Per-GPU telemetry in long form (run_id, gpu_index, series, t_s, value), min/max buckets per series."""
    buckets = max(1, int(max_points) // 2)
    aggs = ",\n".join(
        f"arg_min(t_s, {g}) AS {g}_tmin, min({g}) AS {g}_min, arg_max(t_s, {g}) AS {g}_tmax, max({g}) AS {g}_max"
        for g in GPU_SERIES
    )
    parts = []
    for g in GPU_SERIES:
        parts.append(f"SELECT gpu_index, '{g}' AS series, {g}_tmin AS t_s, {g}_min::DOUBLE AS value FROM b")
        parts.append(f"SELECT gpu_index, '{g}', {g}_tmax, {g}_max::DOUBLE FROM b WHERE {g}_tmax <> {g}_tmin")
    sql = f"""
WITH s AS (SELECT * FROM gpu_samples WHERE run_id = $run_id),
span AS (SELECT min(t_s) AS t0, greatest(max(t_s) - min(t_s), 1e-9) AS width FROM s),
b AS MATERIALIZED (
    SELECT gpu_index, least(floor((t_s - t0) / width * $buckets), $buckets - 1)::INTEGER AS bucket, {aggs}
    FROM s, span GROUP BY gpu_index, bucket
), out AS ({" UNION ALL ".join(parts)})
SELECT $run_id AS run_id, gpu_index, series, t_s, value FROM out WHERE value IS NOT NULL
ORDER BY gpu_index, series, t_s
"""
    return _frame(cur, sql, {"run_id": run_id, "buckets": buckets})


def engine_samples(cur: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Every engine sample of one run, in time order (for small runs and exports; use ``timeline`` to plot)."""
    return _frame(
        cur, "SELECT * EXCLUDE (run_id) FROM engine_samples WHERE run_id = $run_id ORDER BY t_s", {"run_id": run_id}
    )


def requests(cur: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Every request of one run with derived ttft_s, tpot_s, e2e_s, queue_s, in arrival order."""
    return _frame(cur, REQUESTS_DERIVED + " ORDER BY arrival_s, request_id", {"run_id": run_id})


def request_distribution(cur: duckdb.DuckDBPyConnection, run_id: str, metric: str) -> pl.DataFrame:
    """The empirical CDF of one request metric: (value, cdf) sorted by value, nulls left out."""
    if metric not in REQUEST_METRICS:
        raise ValueError(f"metric {metric!r} is unknown; use one of {', '.join(REQUEST_METRICS)}")
    sql = f"""
        WITH r AS ({REQUESTS_DERIVED})
        SELECT {metric} AS value, cume_dist() OVER (ORDER BY {metric}) AS cdf
        FROM r WHERE {metric} IS NOT NULL ORDER BY value
    """
    return _frame(cur, sql, {"run_id": run_id})


def request_percentiles(
    cur: duckdb.DuckDBPyConnection, run_ids: Sequence[str], percentiles: Sequence[float] = (0.5, 0.9, 0.99)
) -> pl.DataFrame:
    """Per run and metric: count, mean and the given percentiles (linear interpolation, like numpy's default)."""
    qs = [float(q) for q in percentiles]
    if any(not 0.0 <= q <= 1.0 for q in qs):
        raise ValueError("percentiles are fractions 0..1, e.g. 0.99")
    frames = []
    for run_id in run_ids:
        selects = []
        for metric in REQUEST_METRICS:
            selects.append(
                f"SELECT '{metric}' AS metric, count({metric}) AS n, avg({metric}) AS mean, "
                f"quantile_cont({metric}, $qs) AS q FROM r"
            )
        sql = f"WITH r AS ({REQUESTS_DERIVED}) " + " UNION ALL ".join(selects)
        frame = _frame(cur, sql, {"run_id": run_id, "qs": qs})
        columns = [pl.lit(run_id).alias("run_id"), pl.col("metric"), pl.col("n"), pl.col("mean")]
        columns += [pl.col("q").list.get(i, null_on_oob=True).alias(f"p{_pct_label(q)}") for i, q in enumerate(qs)]
        frames.append(frame.select(columns))
    if not frames:
        return pl.DataFrame(schema={"run_id": pl.String, "metric": pl.String, "n": pl.Int64, "mean": pl.Float64})
    return pl.concat(frames)


def _pct_label(q: float) -> str:
    text = f"{q * 100:g}"
    return text.replace(".", "_")


def request_lengths(cur: duckdb.DuckDBPyConnection, run_id: str) -> np.ndarray:
    """The run's actual request list as an (n, 2) int64 array of (isl, osl), in arrival order."""
    rows = cur.execute(
        "SELECT isl, osl FROM requests WHERE run_id = ? ORDER BY arrival_s, request_id", [run_id]
    ).fetchnumpy()
    return np.column_stack([rows["isl"].astype(np.int64), rows["osl"].astype(np.int64)]).reshape(-1, 2)


def measured_summary(cur: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any] | None:
    """The run's measured summary, keyed exactly like the engine's predicted summary (SUMMARY_KEYS)."""
    run = cur.execute(
        "SELECT kv_capacity_tokens, num_requests, extra_json FROM runs WHERE run_id = ?", [run_id]
    ).fetchall()
    if not run:
        return None
    kv_capacity_tokens, declared_requests, extra_json = run[0]
    req = cur.sql(
        f"""WITH r AS ({REQUESTS_DERIVED})
        SELECT count(*) AS n, max(finished_s) AS completion_s,
            avg(ttft_s), quantile_cont(ttft_s, 0.5), quantile_cont(ttft_s, 0.99),
            avg(tpot_s), quantile_cont(tpot_s, 0.5), quantile_cont(tpot_s, 0.99),
            avg(e2e_s), quantile_cont(e2e_s, 0.5), quantile_cont(e2e_s, 0.99),
            avg(queue_s),
            sum(CASE WHEN finished_s IS NOT NULL THEN coalesce(output_tokens, osl) ELSE output_tokens END)
                AS generated,
            sum(num_preemptions) AS request_preemptions
        FROM r""",
        params={"run_id": run_id},
    ).fetchall()[0]
    # Peaks and counter totals come from the rollup (exact: it keeps every bucket's min/max and first/last);
    # only the bucket holding the first preemption is read from the raw samples, to time the cliff exactly.
    eng = cur.sql(
        """WITH f AS (SELECT * FROM engine_timeline WHERE run_id = $run_id),
        base AS (SELECT min(preemptions_total_first) AS p0 FROM f),
        onset AS (
            SELECT t_first, t_last FROM f, base WHERE preemptions_total_last > p0 ORDER BY t_first LIMIT 1
        )
        SELECT count(*), max(running_max), max(kv_usage_max),
            max(preemptions_total_last) - min(preemptions_total_first),
            (SELECT min(t_s) FROM engine_samples, onset, base
             WHERE run_id = $run_id AND t_s BETWEEN onset.t_first AND onset.t_last AND preemptions_total > p0),
            max(generation_tokens_total_last) - min(generation_tokens_total_first), max(t_last)
        FROM f""",
        params={"run_id": run_id},
    ).fetchall()[0]
    (n, completion_s, *latency, queue_mean, generated, request_preemptions) = req
    samples, peak_running, peak_kv, counter_preemptions, cliff_onset, counter_generated, last_sample_s = eng
    if n == 0:
        completion_s = last_sample_s if samples else None
    preemptions = counter_preemptions if counter_preemptions is not None else request_preemptions
    generated_tokens = generated if generated is not None else counter_generated
    summary: dict[str, Any] = {
        "completion_s": completion_s,
        "cliff_onset_s": cliff_onset,
        "preemptions": None if preemptions is None else int(preemptions),
        "peak_running": None if peak_running is None else int(peak_running),
        "peak_kv_usage": peak_kv,
        "kv_capacity_tokens": kv_capacity_tokens,
        "ttft_mean_s": latency[0],
        "ttft_p50_s": latency[1],
        "ttft_p99_s": latency[2],
        "tpot_mean_s": latency[3],
        "tpot_p50_s": latency[4],
        "tpot_p99_s": latency[5],
        "e2e_mean_s": latency[6],
        "e2e_p50_s": latency[7],
        "e2e_p99_s": latency[8],
        "queue_mean_s": queue_mean,
        "num_requests": int(n) if n else declared_requests,
        "generated_tokens": None if generated_tokens is None else int(generated_tokens),
        "generation_tokens_per_s": (
            float(generated_tokens) / completion_s if generated_tokens is not None and completion_s else None
        ),
        "bound_regime": None,  # a prediction says which resource bounds a step; a measurement cannot
    }
    if n == 0 and extra_json:
        extra = json.loads(extra_json)
        _fill_from_histograms(summary, extra.get("histograms") or {})
        _fill_from_client_summary(summary, extra.get("client_summary") or {})
    assert tuple(summary) == SUMMARY_KEYS
    return summary


def _fill_from_histograms(summary: dict[str, Any], histograms: dict[str, Any]) -> None:
    """Runs imported from /metrics have no request rows: their latency histograms give means and percentiles
    (percentiles interpolated inside buckets, as Prometheus' histogram_quantile does)."""
    for metric, prefix in (("ttft_s", "ttft"), ("tpot_s", "tpot"), ("e2e_s", "e2e"), ("queue_s", "queue")):
        hist = histograms.get(metric)
        if not hist or not hist.get("count"):
            continue
        summary[f"{prefix}_mean_s"] = hist["sum"] / hist["count"]
        if prefix != "queue":
            summary[f"{prefix}_p50_s"] = histogram_quantile(0.5, hist["buckets"])
            summary[f"{prefix}_p99_s"] = histogram_quantile(0.99, hist["buckets"])
    e2e = histograms.get("e2e_s")
    if e2e and summary["num_requests"] is None:
        summary["num_requests"] = int(e2e["count"])


def _fill_from_client_summary(summary: dict[str, Any], figures: dict[str, Any]) -> None:
    """Runs imported from a benchmark client's summary alone (vllm bench without --save-detailed, a sweep point,
    a GuideLLM benchmark without request rows) carry the client's own figures: they fill what the store has no rows
    for, and nothing it measured itself."""
    for key, value in figures.items():
        if key in summary and summary[key] is None and value is not None:
            summary[key] = int(value) if key in ("num_requests", "generated_tokens") else float(value)


def histogram_quantile(q: float, buckets: list[list[Any]]) -> float | None:
    """Quantile from cumulative buckets [[upper_bound or None for +Inf, count], ...] sorted by bound."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if not total:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound is None:  # in the +Inf bucket: the highest finite bound is the best one can say
                return lower
            inside = cumulative - below
            return bound if inside <= 0 else lower + (bound - lower) * (rank - below) / inside
        if bound is not None:
            lower = bound
        below = cumulative
    return lower


def table_counts(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
    counts = {}
    for table in ("runs", "engine_samples", "requests", "gpu_samples"):
        counts[table] = int(cur.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
    return counts
