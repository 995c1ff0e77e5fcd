"""GuideLLM benchmark reports (``guidellm run ... --output kind=json|yaml``, report format version 2): one run per
benchmark in the report (each point of a sweep, synchronous, throughput, constant or poisson rate, concurrency).

Read per benchmark (guidellm/benchmark/schemas, GuideLLM 0.8): ``config.strategy`` (``type_`` and its ``rate`` or
``streams``), ``requests.successful`` (per-request ``info.timings`` as unix seconds: ``request_start``,
``first_token_iteration``, ``request_end``; token counts in ``input_metrics``/``output_metrics.text_tokens``),
``requests.errored``/``incomplete`` (counted), and the report's own ``metrics`` (``request_totals``,
``time_to_first_token_ms``, ``inter_token_latency_ms``, ``request_latency``, each ``.successful`` with ``mean``,
``median``, ``percentiles.p99``) kept as ``client_summary``.

Per request: ``arrival_s = request_start − the benchmark's first request_start``, ``first_token_s`` at
``first_token_iteration``, ``finished_s`` at ``request_end`` (so E2E is GuideLLM's ``request_latency`` and TTFT its
``time_to_first_token_ms``), ``isl``/``osl``/``output_tokens`` the text token counts. GuideLLM's TPOT is
(last token − start) / tokens; cliffscope's (the inter-token time) is GuideLLM's ``inter_token_latency_ms``. When
the report keeps only a sample of the requests (``sample_size``), the rows are that sample and ``num_requests`` is
GuideLLM's count of all of them; the notes say so.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from engine.bundle import REQUESTS
from engine.formats.model import ParsedRun, ValidationError
from engine.formats.outside import content_sha256, outside_meta, safe_id_part

ORIGIN = "guidellm-report"
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
        raise ValidationError.one(where, "a benchmark is not an object", "use the report as GuideLLM wrote it")
    strategy = _get(bench, "config", "strategy") or {}
    kind = str(strategy.get("type_", "unknown"))
    successful = _get(bench, "requests", "successful")
    if not isinstance(successful, list):
        raise ValidationError.one(
            where, "no requests.successful list", "use the report as GuideLLM wrote it", column="requests.successful"
        )
    table = _request_table(successful, where)
    totals = _get(bench, "metrics", "request_totals") or {}
    done = totals.get("successful") if isinstance(totals.get("successful"), int) else len(successful)
    errored, incomplete = totals.get("errored") or 0, totals.get("incomplete") or 0
    summary = _client_summary(bench, where)
    summary["num_requests"] = float(done)
    notes = [f"GuideLLM {version} benchmark {index + 1} of {count}: {_describe(kind, strategy)}."]
    if table.num_rows < done:
        notes.append(f"The report keeps {table.num_rows} of the {done} successful requests (GuideLLM sample_size).")
    if errored or incomplete:
        notes.append(f"{errored} errored and {incomplete} incomplete request(s) are not in the rows.")
    notes.append("Server-side scheduling times and the engine timeline are not in this format.")
    rate = strategy.get("rate")
    known: dict[str, Any] = {
        "num_requests": int(done),
        "status": "partial" if errored or incomplete else "complete",
        "name": f"GuideLLM {kind}"
        + (f" {_describe(kind, strategy)}" if kind not in ("synchronous", "throughput") else ""),
    }
    if isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate):
        known["arrival_rate"] = float(rate)
    model = _get(bench, "config", "requests", "model") or _get(bench, "config", "backend", "model")
    if isinstance(model, str):
        known["model_name"] = model
    sha = content_sha256(data, f"guidellm\0{index}")
    known["run_id"] = f"guidellm-{safe_id_part(kind, 16)}-{sha[:12]}-b{index}"
    meta, missing = outside_meta(known, origin_label="a GuideLLM benchmark report", notes=notes)
    extra = {"client_summary": summary, "guidellm": {"benchmark": index, "strategy": strategy, "version": version}}
    return ParsedRun(meta=meta, tables={"requests": table}, origin=ORIGIN, file=where, content_sha256=sha,
                     strict=False, missing=missing, extra=extra)  # fmt: skip


def _describe(kind: str, strategy: dict[str, Any]) -> str:
    if kind in ("constant", "poisson") and strategy.get("rate") is not None:
        return f"{kind} at {strategy['rate']:g} requests/s"
    if kind == "concurrent" and strategy.get("streams") is not None:
        return f"{strategy['streams']} concurrent streams"
    return kind


def _request_table(requests: list[Any], where: str) -> pa.Table:
    starts = [_get(r, "info", "timings", "request_start") for r in requests]
    valid = [s for s in starts if _finite(s)]
    t0 = min(valid) if valid else 0.0
    rows: dict[str, list[Any]] = {name: [] for name in REQUESTS.names}
    for i, request in enumerate(requests):
        timings = _get(request, "info", "timings") or {}
        start = _time(timings.get("request_start"), where, i, "request_start")
        first = _time(timings.get("first_token_iteration"), where, i, "first_token_iteration", optional=True)
        end = _time(timings.get("request_end"), where, i, "request_end")
        isl = _get(request, "input_metrics", "text_tokens")
        out = _get(request, "output_metrics", "text_tokens")
        rows["request_id"].append(str(request.get("request_id", i)) if isinstance(request, dict) else str(i))
        rows["isl"].append(isl)
        rows["osl"].append(out)
        rows["output_tokens"].append(out)
        rows["arrival_s"].append(start - t0)
        rows["first_scheduled_s"].append(None)
        rows["first_token_s"].append(None if first is None else first - t0)
        rows["finished_s"].append(end - t0)
        rows["num_preemptions"].append(None)
    try:
        return pa.table(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValidationError.one(
            where, f"per-request values of mixed types ({str(exc)[:120]})", "use the report as GuideLLM wrote it"
        ) from None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _time(value: Any, where: str, row: int, key: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if not _finite(value):
        raise ValidationError.one(
            where, f"{value!r} is not a time", "use the report as GuideLLM wrote it", row=row + 1,
            column=f"requests.successful.info.timings.{key}",
        )  # fmt: skip
    return float(value)


def _client_summary(bench: dict[str, Any], where: str) -> dict[str, float]:
    summary: dict[str, float] = {}
    for ours, (metric, stat, scale) in SUMMARY_FIGURES.items():
        block = _get(bench, "metrics", metric, "successful")
        value = _get(block, "percentiles", stat) if stat.startswith("p") else _get(block, stat)
        if value is None:
            continue
        if not _finite(value):
            raise ValidationError.one(where, f"{value!r} is not a number", "use the report as GuideLLM wrote it",
                                      column=f"metrics.{metric}.successful.{stat}")  # fmt: skip
        summary[ours] = float(value) * scale
    duration = bench.get("duration")
    if _finite(duration):
        summary["completion_s"] = float(duration)
    return summary
