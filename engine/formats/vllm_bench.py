"""``vllm bench serve --save-result`` JSON: with ``--save-detailed``, one request row per prompt the client sent;
without it, the client's summary alone (``client_summary``: what is missing is listed in the run's notes).

Keys read (vllm/benchmarks/serve.py): ``input_lens``, ``output_lens``, ``ttfts``, ``latencies`` (or ``itls``),
``start_times``, ``errors``, plus ``model_id``, ``date``, ``request_rate``, ``max_concurrency``, ``num_prompts``,
``duration`` and any ``--metadata KEY=VALUE`` pairs (a pair whose key is a run field, e.g. ``device=H200`` or
``tp=2``, fills that field). ``--append-result`` files (several JSON objects in a row) become one run per object.

The client sees a request's life from outside: arrival is when it was sent (``start_times``, made relative to the
first), first token at arrival + ttft, finished at arrival + latency. When the server scheduled it is unknown
(``first_scheduled_s`` is null), and so is the engine timeline: pair the file with a /metrics scrape for that.
Failed requests (non-empty ``errors``) carry no timings; they are left out and counted in the notes.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import pyarrow as pa

from engine.bundle import REQUESTS, RUN_FIELDS
from engine.formats.model import ParsedRun, ValidationError
from engine.formats.outside import coerce_meta_value, content_sha256, outside_meta, safe_id_part

ORIGIN = "vllm-bench-json"
DETAIL_KEYS = ("input_lens", "output_lens", "ttfts")
SIGNATURE_KEYS = ("ttfts", "input_lens", "output_lens", "request_throughput", "total_output_tokens")
# Keys vllm bench writes itself; anything else at the top level came from --metadata.
BENCH_KEYS = {
    "date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts", "request_rate",
    "burstiness", "max_concurrency", "ramp_up_strategy", "ramp_up_start_rps", "ramp_up_end_rps", "duration",
    "completed", "failed", "total_input_tokens", "total_output_tokens", "request_throughput", "request_goodput",
    "output_throughput", "total_token_throughput", "input_lens", "output_lens", "ttfts", "itls", "latencies",
    "start_times", "queue_times", "generated_texts", "errors", "max_output_tokens_per_s", "max_concurrent_requests",
    "rtfx", "total_input_sequences", "input_sequence_throughput",
}  # fmt: skip


def looks_like_bench(obj: Any) -> bool:
    return isinstance(obj, dict) and sum(key in obj for key in SIGNATURE_KEYS) >= 2


def read_bench(objects: list[dict[str, Any]], data: bytes, display: str) -> list[ParsedRun]:
    return [_read_one(obj, data, display, index, len(objects)) for index, obj in enumerate(objects)]


def _read_one(obj: dict[str, Any], data: bytes, display: str, index: int, count: int) -> ParsedRun:
    where = display if count == 1 else f"{display} (result {index + 1} of {count})"
    missing_detail = [key for key in DETAIL_KEYS if not isinstance(obj.get(key), list)]
    if len(missing_detail) == len(DETAIL_KEYS):
        return read_summary_only(obj, data, where, index)
    if missing_detail:
        raise ValidationError.one(
            where,
            f"per-request data incomplete ({', '.join(missing_detail)} missing)",
            "use the file exactly as vllm bench serve --save-result --save-detailed wrote it",
            column=missing_detail[0],
        )
    return read_detailed(obj, data, where, index)


def read_detailed(
    obj: dict[str, Any], data: bytes, where: str, index: int, known_extra: dict[str, Any] | None = None
) -> ParsedRun:
    """A --save-detailed result: one request row per prompt sent."""
    n = len(obj["input_lens"])
    lists: dict[str, list[Any]] = {}
    for key in ("input_lens", "output_lens", "ttfts", "latencies", "itls", "start_times", "errors"):
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or len(value) != n:
            raise ValidationError.one(
                where,
                f"{key} has {len(value) if isinstance(value, list) else 'no'} entries, input_lens has {n}",
                "use the file exactly as vllm bench wrote it",
                column=key,
            )
        lists[key] = value
    if "latencies" not in lists and "itls" not in lists:
        raise ValidationError.one(
            where, "neither latencies nor itls", "re-run vllm bench serve with --save-detailed", column="latencies"
        )
    notes: list[str] = []
    starts = lists.get("start_times")
    if starts is None:
        if obj.get("request_rate") not in ("inf", None) or obj.get("max_concurrency") is not None:
            raise ValidationError.one(
                where,
                "no start_times, and requests did not all arrive at once",
                "use a vLLM whose bench saves start_times (0.10 or later), or request_rate=inf",
                column="start_times",
            )
        starts = [0.0] * n
        notes.append("The file has no start_times; with request_rate=inf every request is taken to arrive at t=0.")
    errors = lists.get("errors", [""] * n)
    rows: dict[str, list[Any]] = {name: [] for name in REQUESTS.names}
    failed: list[str] = []
    valid_starts = [s for s, e in zip(starts, errors, strict=True) if not e and _finite(s)]
    t0 = min(valid_starts) if valid_starts else 0.0
    for i in range(n):
        if errors[i]:
            failed.append(str(errors[i]))
            continue
        arrival = _num(starts[i], where, i, "start_times") - t0
        ttft = _num(lists["ttfts"][i], where, i, "ttfts")
        if "latencies" in lists:
            latency = _num(lists["latencies"][i], where, i, "latencies")
        else:
            itl = lists["itls"][i]
            if not isinstance(itl, list):
                raise ValidationError.one(where, "itls entry is not a list", "use the file as written", row=i + 1)
            latency = ttft + sum(_num(x, where, i, "itls") for x in itl)
        out = lists["output_lens"][i]
        rows["request_id"].append(str(i))
        rows["isl"].append(lists["input_lens"][i])
        rows["osl"].append(out)
        rows["output_tokens"].append(out)
        rows["arrival_s"].append(arrival)
        rows["first_scheduled_s"].append(None)
        rows["first_token_s"].append(arrival + ttft)
        rows["finished_s"].append(arrival + latency)
        rows["num_preemptions"].append(None)
    if not rows["request_id"]:
        raise ValidationError.one(where, f"all {n} requests failed", "check the server; nothing here to import")
    if failed:
        notes.append(f"{len(failed)} failed request(s) left out (first error: {failed[0][:200]}).")
    notes.append("Server-side scheduling times and the engine timeline are not in this format.")
    try:
        table = pa.table(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValidationError.one(
            where, f"per-request values of mixed types ({str(exc)[:120]})", "use the file as vllm bench wrote it"
        ) from None
    known = _known_meta(obj, where)
    known.update(known_extra or {})
    summary, _lacking = client_summary(obj, where)
    sha = content_sha256(data, str(index))
    model = obj.get("model_id")
    known.setdefault("run_id", f"bench-{safe_id_part(str(model or 'run'), 24)}-{sha[:12]}")
    known.setdefault("name", f"vllm bench: {model or 'unknown model'} ({obj.get('date', 'undated')})")
    known.setdefault("num_requests", len(rows["request_id"]))
    known["status"] = "partial" if failed else "complete"
    meta, missing = outside_meta(known, origin_label="vllm bench serve --save-detailed JSON", notes=notes)
    return ParsedRun(
        meta=meta,
        tables={"requests": table},
        origin=ORIGIN,
        file=where,
        content_sha256=sha,
        strict=False,
        missing=missing,
        extra={"client_summary": summary},
    )


# The client's own summary figures -> the measured summary's keys (engine.summary.SUMMARY_KEYS), ms -> s.
SUMMARY_FIGURES: dict[str, tuple[str, float]] = {
    "completion_s": ("duration", 1.0),
    "num_requests": ("completed", 1.0),
    "generated_tokens": ("total_output_tokens", 1.0),
    "generation_tokens_per_s": ("output_throughput", 1.0),
    **{
        f"{ours}_{stat}_s": (f"{word}_{theirs}_ms", 1e-3)
        for ours, theirs in (("ttft", "ttft"), ("tpot", "tpot"), ("e2e", "e2el"))
        for stat, word in (("mean", "mean"), ("p50", "median"), ("p99", "p99"))
    },
}


def client_summary(obj: dict[str, Any], where: str) -> tuple[dict[str, float], list[str]]:
    """The figures the client's summary holds, in our units, and the keys of those it does not."""
    summary: dict[str, float] = {}
    lacking: list[str] = []
    for ours, (theirs, scale) in SUMMARY_FIGURES.items():
        value = obj.get(theirs)
        if value is None:
            lacking.append(ours)
            continue
        if not _finite(value) or value < 0:
            raise ValidationError.one(
                where, f"{value!r} is not a non-negative number", "use the file as vllm bench wrote it", column=theirs
            )
        summary[ours] = float(value) * scale
    return summary, lacking


def read_summary_only(
    obj: dict[str, Any], data: bytes, where: str, index: int, known_extra: dict[str, Any] | None = None
) -> ParsedRun:
    """A result saved without --save-detailed: the client's summary figures, no request rows."""
    summary, lacking = client_summary(obj, where)
    if "num_requests" not in summary:
        raise ValidationError.one(
            where,
            "no completed count and no per-request data",
            "use the file as vllm bench wrote it",
            column="completed",
        )
    known = _known_meta(obj, where)
    known.update(known_extra or {})
    sha = content_sha256(data, str(index))
    model = obj.get("model_id")
    known.setdefault("run_id", f"bench-{safe_id_part(str(model or 'run'), 24)}-{sha[:12]}")
    known.setdefault("name", f"vllm bench (summary): {model or 'unknown model'} ({obj.get('date', 'undated')})")
    known.setdefault("num_requests", int(summary["num_requests"]))
    failed = obj.get("failed")
    known["status"] = "partial" if _finite(failed) and failed > 0 else "complete"
    notes = [
        "Saved without --save-detailed: the client's summary figures only (client_summary), no request rows, so no "
        "per-request distributions, arrival pattern or request lengths"
        + (f"; the summary also lacks {', '.join(lacking)}" if lacking else "")
        + ". Re-run with --save-detailed for the requests.",
        "Server-side scheduling times and the engine timeline are not in this format.",
    ]
    meta, missing = outside_meta(known, origin_label="vllm bench serve --save-result JSON (summary only)", notes=notes)
    return ParsedRun(
        meta=meta,
        tables={},
        origin=ORIGIN + "-summary",
        file=where,
        content_sha256=sha,
        strict=False,
        missing=missing,
        extra={"client_summary": summary, "client_summary_lacks": lacking},
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any, where: str, row: int, column: str) -> float:
    if not _finite(value):
        raise ValidationError.one(
            where,
            f"{value!r} is not a finite number",
            "use the file as vllm bench wrote it",
            row=row + 1,
            column=column,
        )
    return float(value)


def _known_meta(obj: dict[str, Any], where: str) -> dict[str, Any]:
    known: dict[str, Any] = {}
    if isinstance(obj.get("model_id"), str):
        known["model_name"] = obj["model_id"]
    date = obj.get("date")
    if isinstance(date, str):
        try:
            known["created_at"] = datetime.strptime(date, "%Y%m%d-%H%M%S").isoformat() + "Z"
        except ValueError:
            known["created_at"] = date
    rate = obj.get("request_rate")
    if _finite(rate):
        known["arrival_rate"] = float(rate)
    for key, value in obj.items():  # --metadata KEY=VALUE pairs naming run fields
        if key in BENCH_KEYS or key not in RUN_FIELDS:
            continue
        if isinstance(value, str):
            try:
                known[key] = coerce_meta_value(key, value)
            except ValueError as exc:
                raise ValidationError.one(where, f"--metadata {exc}", "fix that metadata pair", column=key) from None
    return known
