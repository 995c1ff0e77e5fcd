"""GuideLLM benchmark reports (``guidellm run ... --output kind=json|yaml``, report format version 2): one run per
benchmark in the report (each point of a sweep, synchronous, throughput, constant or poisson rate, concurrency).

Read per benchmark (checked on reports GuideLLM 0.8.1 wrote against a vLLM 0.32 CPU server,
tests/support/tool_files/guidellm-0.8-*.gz): ``config.strategy`` (``type_`` and its ``rate`` or
``streams``), ``requests.successful`` (per request: ``info.timings`` as unix seconds ``request_start``,
``first_token_iteration``, ``request_end``; the token counts GuideLLM summarises, ``prompt_tokens`` and
``output_tokens``; ``max_tokens``/``max_completion_tokens`` from the body it sent, ``request_args``; vLLM's own
``response_metrics.queue_time_ms`` when the server returns it), ``requests.errored``/``incomplete`` (counted),
``start_time``, ``duration``, and the report's own ``metrics`` (``request_totals``, ``time_to_first_token_ms``,
``inter_token_latency_ms``, ``request_latency``, each ``.successful`` with ``mean``, ``median``, ``percentiles.p99``;
``output_token_count``, ``output_tokens_per_second``) kept as ``client_summary``.

Per request: ``arrival_s = request_start − the benchmark's first request_start`` (GuideLLM's ``start_time``),
``first_token_s`` at ``first_token_iteration``, ``finished_s`` at ``request_end`` (end of the stream). So TTFT is
GuideLLM's ``time_to_first_token_ms`` and E2E its ``request_latency``, exactly. The rows' span (first send to last
end) is GuideLLM's ``duration`` except where its window closes at the end of the request its scheduler finalised
last while another ended later (9.6 ms, 1.1 %, on the fixture's throughput benchmark). cliffscope's TPOT is (end of
stream − first token) / (tokens − 1), as ``vllm bench serve`` computes it; GuideLLM's ``inter_token_latency_ms``
stops at the last token's chunk, before vLLM's closing usage chunk and ``[DONE]`` (0.6-20.6 ms a request later on
the fixtures, so cliffscope's mean TPOT is 0.3-2.5 % above GuideLLM's mean ITL there); GuideLLM's own figures are
kept in ``client_summary``.
``first_scheduled_s`` is the send time plus vLLM's ``queue_time_ms`` (``--enable-per-request-metrics``), so queue
time is the engine's own; null without it. When the report keeps only a sample of the requests (``sample_size``),
the rows are that sample and ``num_requests`` is GuideLLM's count of all of them; the notes say so.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from engine.bundle import REQUESTS
from engine.formats.model import ParsedRun, ValidationError
from engine.formats.outside import content_sha256, outside_meta, safe_id_part

ORIGIN = "guidellm-report"
AS_WRITTEN = "use the report as GuideLLM wrote it"
# our summary key -> (GuideLLM metric, statistic, scale to seconds)
_STATS = (("mean", "mean"), ("p50", "median"), ("p99", "p99"))
SUMMARY_FIGURES: dict[str, tuple[str, str, float]] = {
    f"{ours}_{key}_s": (metric, stat, scale)
    for ours, metric, scale in (
        ("ttft", "time_to_first_token_ms", 1e-3),
        ("tpot", "inter_token_latency_ms", 1e-3),
        ("e2e", "request_latency", 1.0),
    )
    for key, stat in _STATS
}  # fmt: skip


def looks_like_report(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("benchmarks"), list)
        and isinstance(obj.get("metadata"), dict)
        and "guidellm_version" in obj["metadata"]
    )


def read_report(report: dict[str, Any], data: bytes, display: str) -> list[ParsedRun]:
    benchmarks = report["benchmarks"]
    if not benchmarks:
        raise ValidationError.one(display, "the report holds no benchmarks", "upload a report of a finished run")
    version = str(report["metadata"].get("guidellm_version"))
    return [_read_benchmark(b, data, display, i, len(benchmarks), version) for i, b in enumerate(benchmarks)]


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _read_benchmark(bench: Any, data: bytes, display: str, index: int, count: int, version: str) -> ParsedRun:
    where = f"{display} (benchmark {index + 1} of {count})"
    if not isinstance(bench, dict):
        raise ValidationError.one(where, "a benchmark is not an object", AS_WRITTEN, column="benchmarks")
    strategy = _get(bench, "config", "strategy")
    strategy = strategy if isinstance(strategy, dict) else {}
    kind = str(strategy.get("type_", "unknown"))
    successful = _get(bench, "requests", "successful")
    if not isinstance(successful, list):
        raise ValidationError.one(where, "no requests.successful list", AS_WRITTEN, column="requests.successful")
    table, queue_known = _request_table(successful, where)
    totals = _get(bench, "metrics", "request_totals")
    totals = totals if isinstance(totals, dict) else {}
    done = _count(totals.get("successful"), len(successful))
    errored, incomplete = _count(totals.get("errored"), 0), _count(totals.get("incomplete"), 0)
    summary = _client_summary(bench, where)
    summary["num_requests"] = float(done)
    head = f"GuideLLM {version} benchmark {index + 1} of {count}: {_describe(kind, strategy)}."
    notes = _notes(head, table.num_rows, done, errored, incomplete, queue_known)
    known = _known_fields(bench, kind, strategy, done, errored + incomplete)
    sha = content_sha256(data, f"guidellm\0{index}")
    known["run_id"] = f"guidellm-{safe_id_part(kind, 16)}-{sha[:12]}-b{index}"
    meta, missing = outside_meta(known, origin_label="a GuideLLM benchmark report", notes=notes)
    extra = {"client_summary": summary, "guidellm": {"benchmark": index, "strategy": strategy, "version": version}}
    return ParsedRun(meta=meta, tables={"requests": table}, origin=ORIGIN, file=where, content_sha256=sha,
                     strict=False, missing=missing, extra=extra)  # fmt: skip


def _count(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _known_fields(bench: dict[str, Any], kind: str, strategy: dict[str, Any], done: int, lost: int) -> dict:
    described = _describe(kind, strategy)
    known: dict[str, Any] = {
        "num_requests": int(done),
        "status": "partial" if lost else "complete",
        "name": f"GuideLLM {described}",
    }
    rate = strategy.get("rate")
    if kind in ("constant", "poisson") and _finite(rate) and rate > 0:
        known["arrival_rate"] = float(rate)
    model = _get(bench, "config", "backend", "model") or _get(bench, "config", "requests", "model")
    if isinstance(model, str) and model:
        known["model_name"] = model
    start = bench.get("start_time")
    if _finite(start) and 0 < start < 1e11:
        known["created_at"] = datetime.fromtimestamp(start, tz=UTC).isoformat(timespec="seconds")
    return known


def _notes(head: str, rows: int, done: int, errored: int, incomplete: int, queue_known: bool) -> list[str]:
    notes = [head]
    if rows < done:
        notes.append(f"The report keeps {rows} of the {done} successful requests (GuideLLM sample_size).")
    if errored or incomplete:
        notes.append(f"{errored} errored and {incomplete} incomplete request(s) are not in the rows.")
    if not queue_known:
        notes.append("Queue times are unknown (the server did not return vLLM's per-request metrics).")
    notes.append("Per-request preemptions and the engine timeline are not in this format.")
    return notes


def _describe(kind: str, strategy: dict[str, Any]) -> str:
    rate, streams = strategy.get("rate"), strategy.get("streams")
    if kind in ("constant", "poisson") and _finite(rate):
        return f"{kind} at {rate:.3g} requests/s"
    if kind == "concurrent" and isinstance(streams, int) and not isinstance(streams, bool):
        return f"concurrent, {streams} streams"
    return kind


def _request_table(requests: list[Any], where: str) -> tuple[pa.Table, bool]:
    """The request rows, times relative to the first send; also whether every row has vLLM's queue time."""
    starts = [_start(r) for r in requests]
    valid = [s for s in starts if _finite(s)]
    t0 = min(valid) if valid else 0.0
    rows: dict[str, list[Any]] = {name: [] for name in REQUESTS.names}
    for i, request in enumerate(requests):
        if not isinstance(request, dict):
            raise ValidationError.one(where, "a request is not an object", AS_WRITTEN, row=i + 1,
                                      column="requests.successful")  # fmt: skip
        timings = _get(request, "info", "timings")
        timings = timings if isinstance(timings, dict) else {}
        start = _time(starts[i], where, i, "request_start")
        first = _time(timings.get("first_token_iteration"), where, i, "first_token_iteration", optional=True)
        end = _time(_end(request), where, i, "request_end")
        queue_ms = _get(request, "response_metrics", "queue_time_ms")
        out = _first_present(request.get("output_tokens"), _get(request, "output_metrics", "total_tokens"),
                             _get(request, "output_metrics", "text_tokens"))  # fmt: skip
        rows["request_id"].append(str(request.get("request_id", i)))
        rows["isl"].append(_first_present(request.get("prompt_tokens"), _get(request, "input_metrics", "total_tokens"),
                                          _get(request, "input_metrics", "text_tokens")))  # fmt: skip
        rows["osl"].append(_first_present(_asked_tokens(request.get("request_args")), out))
        rows["output_tokens"].append(out)
        rows["arrival_s"].append(start - t0)
        rows["first_scheduled_s"].append(start - t0 + queue_ms / 1e3 if _finite(queue_ms) and queue_ms >= 0 else None)
        rows["first_token_s"].append(None if first is None else first - t0)
        rows["finished_s"].append(end - t0)
        rows["num_preemptions"].append(None)
    try:
        table = pa.table(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise ValidationError.one(where, f"per-request values of mixed types ({str(exc)[:120]})", AS_WRITTEN,
                                  column="requests.successful") from None  # fmt: skip
    return table, table.num_rows > 0 and table.column("first_scheduled_s").null_count == 0


def _start(request: Any) -> Any:
    """GuideLLM's own choice (``request_start_time``): the send time, or when the worker began resolving it."""
    timings = _get(request, "info", "timings") or {}
    start = timings.get("request_start") if isinstance(timings, dict) else None
    return start if start is not None else _get(request, "request_start_time")


def _end(request: dict[str, Any]) -> Any:
    timings = _get(request, "info", "timings") or {}
    end = timings.get("request_end") if isinstance(timings, dict) else None
    return end if end is not None else request.get("request_end_time")


def _first_present(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _asked_tokens(request_args: Any) -> int | None:
    """The output tokens GuideLLM asked for: ``max_tokens`` (completions) or ``max_completion_tokens`` (chat) in the
    body it sent, which it keeps as a JSON string; None when it did not set one."""
    if not isinstance(request_args, str) or len(request_args) > 1 << 20:
        return None
    try:
        body = json.loads(request_args).get("body")
    except (ValueError, AttributeError, RecursionError):
        return None
    asked = _first_present(_get(body, "max_tokens"), _get(body, "max_completion_tokens"))
    return asked if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0 else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _time(value: Any, where: str, row: int, key: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if not _finite(value):
        raise ValidationError.one(
            where, f"{repr(value)[:60]} is not a time", AS_WRITTEN, row=row + 1,
            column=f"requests.successful.info.timings.{key}",
        )  # fmt: skip
    return float(value)


def _client_summary(bench: dict[str, Any], where: str) -> dict[str, float]:
    """GuideLLM's own figures for the benchmark, in cliffscope's summary keys (seconds, tokens, tokens/s)."""
    figures = {ours: (metric, stat, scale) for ours, (metric, stat, scale) in SUMMARY_FIGURES.items()}
    figures["generated_tokens"] = ("output_token_count", "total_sum", 1.0)
    figures["generation_tokens_per_s"] = ("output_tokens_per_second", "mean", 1.0)
    summary: dict[str, float] = {}
    for ours, (metric, stat, scale) in figures.items():
        block = _get(bench, "metrics", metric, "successful")
        value = _get(block, "percentiles", stat) if stat.startswith("p") else _get(block, stat)
        if value is None:
            continue
        if not _finite(value):
            raise ValidationError.one(where, f"{repr(value)[:60]} is not a number", AS_WRITTEN,
                                      column=f"metrics.{metric}.successful.{stat}")  # fmt: skip
        summary[ours] = float(value) * scale
    duration = bench.get("duration")
    if _finite(duration):
        summary["completion_s"] = float(duration)
    return summary
