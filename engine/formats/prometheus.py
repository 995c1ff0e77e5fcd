"""vLLM's ``/metrics`` over time: Prometheus exposition text with timestamps, or a ``query_range`` matrix JSON.

Both become the same list of samples (name, labels, time, value); one run is built per (``model_name``, ``engine``)
label set, so a data-parallel server (one ``engine`` label per DP rank) gives one run per rank, on a common clock.

Series read, old and new names (vllm/v1/metrics/loggers.py; text exposition adds ``_total`` to counters):

==========================  =========================================================================
column                      metric
==========================  =========================================================================
running                     ``vllm:num_requests_running``
waiting                     ``vllm:num_requests_waiting``
kv_usage (0..1)             ``vllm:kv_cache_usage_perc`` (new), ``vllm:gpu_cache_usage_perc`` (old)
preemptions_total           ``vllm:num_preemptions(_total)``
prompt_tokens_total         ``vllm:prompt_tokens(_total)``
generation_tokens_total     ``vllm:generation_tokens(_total)``
==========================  =========================================================================

Latency histograms (``vllm:time_to_first_token_seconds``, ``vllm:request_time_per_output_token_seconds`` or else
``vllm:inter_token_latency_seconds`` / old ``vllm:time_per_output_token_seconds``, ``vllm:e2e_request_latency_seconds``,
``vllm:request_queue_time_seconds``) have no per-request rows; their increase over the file's span is kept with the
run (``histograms``) so the measured summary can give means and percentiles. ``vllm:cache_config_info`` gives the
block size and KV blocks. Times are made relative to the file's first sample.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from engine.bundle import ENGINE_SAMPLES
from engine.formats import dcgm
from engine.formats.model import Limits, ParsedRun, ValidationError
from engine.formats.outside import content_sha256, outside_meta, safe_id_part

TEXT_ORIGIN = "prometheus-text"
RANGE_ORIGIN = "prometheus-query-range"

COLUMN_OF: dict[str, str] = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_usage",
    "vllm:gpu_cache_usage_perc": "kv_usage",
    "vllm:num_preemptions": "preemptions_total",
    "vllm:num_preemptions_total": "preemptions_total",
    "vllm:prompt_tokens": "prompt_tokens_total",
    "vllm:prompt_tokens_total": "prompt_tokens_total",
    "vllm:generation_tokens": "generation_tokens_total",
    "vllm:generation_tokens_total": "generation_tokens_total",
}
# histogram family -> our metric; earlier entries win when a file has several for one metric.
HISTOGRAMS: list[tuple[str, str]] = [
    ("vllm:time_to_first_token_seconds", "ttft_s"),
    ("vllm:request_time_per_output_token_seconds", "tpot_s"),
    ("vllm:inter_token_latency_seconds", "tpot_s"),
    ("vllm:time_per_output_token_seconds", "tpot_s"),
    ("vllm:e2e_request_latency_seconds", "e2e_s"),
    ("vllm:request_queue_time_seconds", "queue_s"),
]
HISTOGRAM_FAMILIES = {family for family, _ in HISTOGRAMS}
SUCCESS = ("vllm:request_success", "vllm:request_success_total")
CACHE_INFO = "vllm:cache_config_info"


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    t_ms: float
    value: float
    line: int  # 1-based line (text) or series index (JSON), for messages


def looks_like_exposition(text: str) -> bool:
    head = text[:65536]
    return bool(re.search(r"^# (TYPE|HELP) \S+", head, re.M) or re.search(r"^vllm:[a-z_]+[{\s]", head, re.M))


def parse_text(text: str, display: str) -> list[Sample]:
    """Parse exposition text (Prometheus text 0.0.4, or OpenMetrics when it ends in ``# EOF``) with Prometheus' own
    parser, which implements the format's escaping and value syntax. Every sample must carry a timestamp (text: ms,
    OpenMetrics: s), as scrapes saved over time do.

    Only the families read here are handed to the parser (most of a scrape is other families); a line the parser
    refuses is then found by parsing the kept lines one at a time, so the message still names the line.
    """
    openmetrics = _is_openmetrics(text)
    kept: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.split("{", 1)[0].split(None, 1)[0] in WANTED:
            kept.append((number, line))
    if not kept:
        return []
    if not openmetrics:
        return _text_samples(kept, display)
    try:
        parsed = _library_samples([line for _n, line in kept], openmetrics)
    except ValueError:
        parsed = []
    if len(parsed) != len(kept):  # refused somewhere (or a line gave no sample): find which line, say why
        _raise_first_bad_line(kept, openmetrics, display)
    return [_sample(sample, number, display) for (number, _line), sample in zip(kept, parsed, strict=True)]


def _text_samples(kept: list[tuple[int, str]], display: str) -> list[Sample]:
    """Text-format lines, each distinct series (the line without its value and timestamp) parsed by the library once.

    A scrape log repeats the same few hundred series every scrape, and the library's label parser costs ~100 µs a
    line: 9.1 MB of scrapes (69,600 samples) took 7.7 s through it line by line against 1.9 s with the old regex.
    Parsing each series once and reading the repeated lines' two trailing numbers with float() gives the library's
    result (the test compares them) at the regex's speed.
    """
    series: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}
    samples: list[Sample] = []
    for number, line in kept:
        head, _sep, tail = line.rpartition(" ")
        head, _sep, value_text = head.rpartition(" ")
        known = series.get(head.rstrip())
        if known is not None:
            try:
                value, t_ms = float(value_text), float(int(tail))
            except ValueError:
                known = None  # not `value ms`: let the library say what is wrong with the line
        if known is None:
            try:
                (parsed,) = _library_samples([line], openmetrics=False)
            except ValueError:
                _raise_first_bad_line([(number, line)], False, display)
            sample = _sample(parsed, number, display)
            samples.append(sample)
            if head.rstrip() and value_text:
                series[head.rstrip()] = (sample.name, sample.labels)
            continue
        samples.append(Sample(known[0], known[1], t_ms, value, number))
    return samples


def _sample(sample: Any, number: int, display: str) -> Sample:
    if sample.timestamp is None:
        raise ValidationError.one(
            display,
            f"line {number}: sample {sample.name} has no timestamp, so there is no timeline",
            "save each scrape with timestamps (value then milliseconds), or export a query_range JSON",
        )
    t_ms = round(float(sample.timestamp) * 1000.0, 3)  # the parser gives seconds for both variants
    labels = tuple(sorted((str(k), str(v)) for k, v in sample.labels.items()))
    return Sample(sample.name, labels, t_ms, float(sample.value), number)


def _is_openmetrics(text: str) -> bool:
    return text.rstrip().endswith("# EOF")


def _library_samples(lines: list[str], openmetrics: bool) -> list[Any]:
    """Samples in line order. Without ``# TYPE`` lines the parser keeps every sample under its own name, which is
    what the readers match on (``_bucket``/``_sum``/``_count`` included)."""
    if openmetrics:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as families_of

        text = "\n".join(lines) + "\n# EOF\n"
    else:
        from prometheus_client.parser import text_string_to_metric_families as families_of

        text = "\n".join(lines) + "\n"
    return [sample for family in families_of(text) for sample in family.samples]


def _raise_first_bad_line(kept: list[tuple[int, str]], openmetrics: bool, display: str) -> None:
    for number, line in kept:
        try:
            got = _library_samples([line], openmetrics)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
            raise ValidationError.one(
                display,
                f"line {number} is not a Prometheus sample: {line[:60]!r} ({reason})",
                "use /metrics output as served",
            ) from None
        if len(got) != 1:
            raise ValidationError.one(
                display, f"line {number} is not one Prometheus sample: {line[:60]!r}", "use /metrics output as served"
            )
    raise ValidationError.one(  # every line parses alone but not together: OpenMetrics' cross-line rules
        display, "the samples do not parse together (OpenMetrics ordering rules)", "use /metrics output as served"
    )


def looks_like_query_range(obj: Any) -> bool:
    items = obj if isinstance(obj, list) else [obj]
    return bool(items) and all(
        isinstance(item, dict) and isinstance(item.get("data"), dict) and "resultType" in item["data"] for item in items
    )


def parse_query_range(objects: Iterable[Any], display: str) -> list[Sample]:
    samples: list[Sample] = []
    index = 0
    for obj in objects:
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise ValidationError.one(
                display,
                f"resultType is {data.get('resultType') if isinstance(data, dict) else None!r}, not 'matrix'",
                "save the response of /api/v1/query_range (a range query), not an instant query",
            )
        result = data.get("result")
        if not isinstance(result, list):
            raise ValidationError.one(display, "data.result is not a list", "save the response as the server sent it")
        for series in result:
            index += 1
            metric = series.get("metric") if isinstance(series, dict) else None
            values = series.get("values") if isinstance(series, dict) else None
            if not isinstance(metric, dict) or not isinstance(values, list):
                raise ValidationError.one(display, f"series {index} lacks metric or values", "save the response whole")
            name = metric.get("__name__")
            if not isinstance(name, str) or not _wanted(name):
                continue
            labels = tuple(sorted((str(k), str(v)) for k, v in metric.items() if k != "__name__"))
            for point in values:
                if not (isinstance(point, list) and len(point) == 2):
                    raise ValidationError.one(
                        display, f"series {index} ({name}): a point is not [time, value]", "save the response whole"
                    )
                t, v = point
                if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
                    raise ValidationError.one(
                        display, f"series {index} ({name}): time {t!r} is not a number", "save the response whole"
                    )
                samples.append(Sample(name, labels, float(t) * 1000.0, _value(str(v), display, index), index))
    return samples


def build_runs(samples: list[Sample], data: bytes, display: str, origin: str, limits: Limits) -> list[ParsedRun]:
    """Group samples into runs, one per (model_name, engine) label set, on one clock."""
    gpu_series = [s for s in samples if dcgm.is_dcgm(s.name)]
    groups: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for sample in samples:
        if dcgm.is_dcgm(sample.name):
            continue
        labels = dict(sample.labels)
        groups[(labels.get("model_name", ""), labels.get("engine", ""))].append(sample)
    timeline_keys = [key for key, group in groups.items() if any(s.name in COLUMN_OF for s in group)]
    if not timeline_keys:
        raise ValidationError.one(
            display,
            "no vLLM timeline series (vllm:num_requests_running, vllm:kv_cache_usage_perc, ...)",
            "scrape a vLLM server's /metrics (or query those series by name so __name__ is kept)",
        )
    timeline_samples = [s for key in timeline_keys for s in groups[key] if s.name in COLUMN_OF]
    window = _busy_window(timeline_samples)
    all_times = sorted({s.t_ms for s in timeline_samples})
    if window is None:
        window = (all_times[0], all_times[-1])
        window_note = "No request was running or waiting in any scrape: the whole file is kept."
    else:
        dropped = sum(t < window[0] for t in all_times), sum(t > window[1] for t in all_times)
        window_note = (
            "t = 0 is the last scrape before requests appeared; "
            f"{dropped[0]} idle scrape(s) before it and {dropped[1]} after the run were left out."
        )
    gpu_table, gpu_notes = dcgm.gpu_table(gpu_series, window, limits, display)
    # cache_config_info may come without a model_name; engine label alone then identifies it
    info_by_engine = {engine: group for (model, engine), group in groups.items() if not model}
    runs = []
    origin_label = "Prometheus exposition text" if origin == TEXT_ORIGIN else "a Prometheus query_range JSON"
    for model, engine in sorted(timeline_keys):
        group = groups[(model, engine)] + (info_by_engine.get(engine, []) if model else [])
        table = _timeline_table(group, window, limits, display)
        known, notes = _meta_from_metrics(group, model, engine)
        notes.extend([window_note, *gpu_notes])
        sha = content_sha256(data, f"{model}\0{engine}")
        part = f"-e{safe_id_part(engine, 16)}" if engine else ""
        known["run_id"] = f"prom-{safe_id_part(model or 'vllm', 24)}-{sha[:12]}{part}"
        known["name"] = f"/metrics of {model or 'vLLM'}" + (f", engine {engine}" if engine else "")
        meta, missing = outside_meta(known, origin_label=origin_label, notes=notes)
        extra: dict[str, Any] = {"metrics_labels": {"model_name": model, "engine": engine}}
        histograms = _histograms(group)
        if histograms:
            extra["histograms"] = histograms
        runs.append(
            ParsedRun(
                meta=meta,
                tables={"engine_samples": table, **({"gpu_samples": gpu_table} if gpu_table is not None else {})},
                origin=origin,
                file=display if not engine else f"{display} [engine {engine}]",
                content_sha256=sha,
                strict=False,
                missing=missing,
                extra=extra,
            )
        )
    return runs


WANTED = frozenset(
    [*COLUMN_OF, *SUCCESS, CACHE_INFO, *dcgm.COLUMN_OF]
    + [family + suffix for family in HISTOGRAM_FAMILIES for suffix in ("_bucket", "_sum", "_count")]
)


def _wanted(name: str) -> bool:
    return name in WANTED


def _value(text: str, display: str, line: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValidationError.one(
            display, f"line {line}: value {text[:40]!r} is not a number", "use /metrics output as served"
        ) from None


def _busy_window(samples: list[Sample]) -> tuple[float, float] | None:
    """(start, end) in ms: from the last scrape before any request was running or waiting to the first scrape after
    the last one was, so a scrape log that began early or ran on after the batch still times the run itself."""
    active = sorted({s.t_ms for s in samples if COLUMN_OF[s.name] in ("running", "waiting") and s.value > 0})
    if not active:
        return None
    times = sorted({s.t_ms for s in samples})
    before = [t for t in times if t < active[0]]
    after = [t for t in times if t > active[-1]]
    return (before[-1] if before else active[0], after[0] if after else active[-1])


def _timeline_table(group: list[Sample], window: tuple[float, float], limits: Limits, display: str) -> pa.Table:
    t0, t_end = window
    by_time: dict[float, dict[str, float | None]] = defaultdict(dict)
    for sample in group:
        column = COLUMN_OF.get(sample.name)
        if column is None or not t0 <= sample.t_ms <= t_end:
            continue
        value: float | None = None if math.isnan(sample.value) else sample.value
        row = by_time[sample.t_ms]
        previous = row.get(column)
        if previous is not None and value is not None:  # the same series split by extra labels (e.g. pid)
            value = max(previous, value) if column == "kv_usage" else previous + value
        row[column] = value
    if len(by_time) > limits.max_rows:
        raise ValidationError.one(display, f"{len(by_time):,} timestamps is over the row limit", "split the file")
    times = sorted(by_time)
    columns: dict[str, list[Any]] = {"t_s": [(t - t0) / 1000.0 for t in times]}
    for field in ENGINE_SAMPLES.names[1:]:
        values = [by_time[t].get(field) for t in times]
        columns[field] = [_whole(v) if field != "kv_usage" else v for v in values]
    return pa.table(columns)


def _whole(value: float | None) -> float | int | None:
    """Counts arrive as floats ("12.0"); whole ones become ints, others stay floats for the validator to refuse."""
    if value is None or not math.isfinite(value) or value != int(value) or abs(value) >= 2**63:
        return value
    return int(value)


def _meta_from_metrics(group: list[Sample], model: str, engine: str) -> tuple[dict[str, Any], list[str]]:
    known: dict[str, Any] = {}
    notes: list[str] = []
    if model:
        known["model_name"] = model
    info = [s for s in group if s.name == CACHE_INFO]
    if info:
        labels = dict(info[-1].labels)
        block = _int_label(labels.get("block_size"))
        blocks = _int_label(labels.get("num_gpu_blocks"))
        if block:
            known["block_size"] = block
        reported = _int_label(labels.get("kv_cache_size_tokens"))
        if blocks is not None:
            known["kv_blocks"] = blocks
        if reported:  # newer vLLM exports the capacity it logs at start-up
            known["kv_capacity_tokens"] = reported
            notes.append("kv_capacity_tokens = kv_cache_size_tokens from vllm:cache_config_info.")
        elif blocks is not None and block:
            known["kv_capacity_tokens"] = blocks * block
            notes.append("kv_capacity_tokens = num_gpu_blocks × block_size from vllm:cache_config_info.")
        dtype = labels.get("cache_dtype")
        if dtype and dtype != "None":
            known["kv_cache_dtype"] = dtype
        kv_bytes = _int_label(labels.get("kv_cache_memory_bytes"))
        gmu = _float_label(labels.get("gpu_memory_utilization"))
        if kv_bytes:  # an explicit KV pool; gpu_memory_utilization then sized nothing
            known["kv_cache_memory_bytes"] = kv_bytes
        elif gmu is not None and 0 < gmu <= 1:
            known["gpu_memory_utilization"] = gmu
    success = [s for s in group if s.name in SUCCESS]
    if success:
        finished = _increase(success)
        if finished is not None and finished == int(finished):
            known["num_requests"] = int(finished)
            notes.append("num_requests = requests finished during the file's span (vllm:request_success).")
    if engine:
        notes.append(f"One engine (DP rank) of the server: engine label {engine!r}.")
    return known, notes


def _int_label(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "", "None") else None
    except ValueError:
        return None


def _float_label(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "", "None") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _increase(samples: list[Sample]) -> float | None:
    """A counter's increase over the span, summed over its label sets (first sample alone: its value)."""
    by_series: dict[tuple, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_series[(sample.name, sample.labels)].append(sample)
    total = 0.0
    for series in by_series.values():
        series.sort(key=lambda s: s.t_ms)
        first, last = series[0].value, series[-1].value
        if not (math.isfinite(first) and math.isfinite(last)):
            return None
        total += last - first if len(series) > 1 else last
    return total


def _histograms(group: list[Sample]) -> dict[str, dict[str, Any]]:
    """Each latency histogram's increase over the span: count, sum and cumulative buckets [[le, count], ...]."""
    by_name: dict[str, list[Sample]] = defaultdict(list)
    for sample in group:
        by_name[sample.name].append(sample)
    out: dict[str, dict[str, Any]] = {}
    for family, metric in HISTOGRAMS:
        if metric in out:
            continue
        count = _increase(by_name.get(family + "_count", []))
        total = _increase(by_name.get(family + "_sum", []))
        if not count or total is None:
            continue
        by_le: dict[float, list[Sample]] = defaultdict(list)
        for sample in by_name.get(family + "_bucket", []):
            bound = _le(sample)
            if bound is not None:
                by_le[bound].append(sample)
        cumulative = []
        for bound in sorted(by_le):
            value = _increase(by_le[bound])
            if value is not None:
                cumulative.append([bound if math.isfinite(bound) else None, value])
        out[metric] = {"family": family, "count": count, "sum": total, "buckets": cumulative}
    return out


def _le(sample: Sample) -> float | None:
    le = dict(sample.labels).get("le")
    return math.inf if le in ("+Inf", "Inf") else _float_label(le)
