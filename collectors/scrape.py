"""Read a vLLM server's Prometheus ``/metrics`` and a DCGM exporter's metrics into typed records.

Parsed with ``prometheus_client.parser`` (the text exposition format's reference parser), never by regex. Names
are vLLM 0.32's (``vllm/v1/metrics/loggers.py``: ``vllm:num_requests_running``, ``vllm:kv_cache_usage_perc``,
``vllm:num_preemptions_total`` ...; counters carry ``_total`` on the wire). A server with several engines (data
parallel) labels each with ``engine``: counts are summed over engines, KV usage is their mean (every engine has a
pool of the same size), ``cache_config_info`` is kept per engine.

DCGM: ``DCGM_FI_PROF_SM_ACTIVE`` and ``DCGM_FI_PROF_DRAM_ACTIVE`` are ratios 0..1 ("Ratio of cycles the device
memory interface is active"), ``DCGM_FI_DEV_FB_USED`` is MiB and ``DCGM_FI_DEV_POWER_USAGE`` watts ("Power draw (in
W)"), as dcgm-exporter's counter lists describe them (github.com/NVIDIA/dcgm-exporter, etc/default-counters.csv and
etc/dcp-metrics-included.csv, checked 2026-12-02); the GPU index is the ``gpu`` label.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
PREEMPTIONS = "vllm:num_preemptions_total"
REQUEST_SUCCESS = "vllm:request_success_total"
CACHE_CONFIG_INFO = "vllm:cache_config_info"
COUNTERS = (PROMPT_TOKENS, GENERATION_TOKENS, PREEMPTIONS, REQUEST_SUCCESS)

DCGM_SM_ACTIVE = "DCGM_FI_PROF_SM_ACTIVE"
DCGM_DRAM_ACTIVE = "DCGM_FI_PROF_DRAM_ACTIVE"
DCGM_FB_USED_MIB = "DCGM_FI_DEV_FB_USED"
DCGM_POWER_W = "DCGM_FI_DEV_POWER_USAGE"
DCGM_FIELDS = (DCGM_SM_ACTIVE, DCGM_DRAM_ACTIVE, DCGM_FB_USED_MIB, DCGM_POWER_W)


class ScrapeError(ValueError):
    """A metrics page that is not vLLM's (or not Prometheus text at all)."""


@dataclass(frozen=True)
class Histogram:
    """One histogram summed over engines: cumulative bucket counts by upper bound, sum and count."""

    buckets: dict[str, float]
    sum: float
    count: float

    def minus(self, earlier: Histogram | None) -> Histogram:
        """What was observed between ``earlier`` and this scrape."""
        if earlier is None:
            return self
        return Histogram(
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.sum - earlier.sum,
            self.count - earlier.count,
        )


@dataclass(frozen=True)
class VllmScrape:
    """One scrape of a vLLM server's /metrics, summed over its engines."""

    running: int
    waiting: int
    kv_usage: float  # 0..1, mean over engines
    counters: dict[str, float]  # COUNTERS by name, summed over engines
    engines: tuple[str, ...]
    cache_config: dict[str, dict[str, str]] = field(default_factory=dict)  # engine -> cache_config_info labels
    histograms: dict[str, Histogram] = field(default_factory=dict)


def parse_vllm_metrics(text: str) -> VllmScrape:
    """Parse vLLM's /metrics text; raises ScrapeError when the gauges the collector needs are absent."""
    gauges: dict[str, dict[str, float]] = defaultdict(dict)
    counters: dict[str, float] = defaultdict(float)
    cache_config: dict[str, dict[str, str]] = {}
    hist: dict[str, dict[str, Any]] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise ScrapeError(f"not Prometheus text: {exc}") from None
    for family in families:
        if not family.name.startswith("vllm:"):
            continue
        for sample in family.samples:
            engine = sample.labels.get("engine", "0")
            if family.type == "histogram":
                _add_histogram_sample(hist, family.name, sample)
            elif sample.name in (RUNNING, WAITING, KV_USAGE):
                gauges[sample.name][engine] = gauges[sample.name].get(engine, 0.0) + sample.value
            elif sample.name in COUNTERS:
                counters[sample.name] += sample.value
            elif sample.name == CACHE_CONFIG_INFO:
                cache_config[engine] = {k: v for k, v in sample.labels.items() if k != "engine"}
    if not gauges[RUNNING] or not gauges[KV_USAGE]:
        raise ScrapeError(
            f"no {RUNNING} / {KV_USAGE} in the page: is this a vLLM server's /metrics (vLLM >= 0.6 with V1 metrics)?"
        )
    engines = tuple(sorted(gauges[RUNNING]))
    kv = gauges[KV_USAGE]
    return VllmScrape(
        running=round(sum(gauges[RUNNING].values())),
        waiting=round(sum(gauges[WAITING].values())),
        kv_usage=sum(kv.values()) / len(kv),
        counters={name: counters.get(name, 0.0) for name in COUNTERS},
        engines=engines,
        cache_config=cache_config,
        histograms={name: Histogram(h["buckets"], h["sum"], h["count"]) for name, h in hist.items()},
    )


def _add_histogram_sample(hist: dict[str, dict[str, Any]], name: str, sample: Any) -> None:
    entry = hist.setdefault(name, {"buckets": {}, "sum": 0.0, "count": 0.0})
    if sample.name.endswith("_bucket"):
        le = sample.labels.get("le", "+Inf")
        entry["buckets"][le] = entry["buckets"].get(le, 0.0) + sample.value
    elif sample.name.endswith("_sum"):
        entry["sum"] += sample.value
    elif sample.name.endswith("_count"):
        entry["count"] += sample.value


@dataclass(frozen=True)
class GpuReading:
    """One GPU in one DCGM scrape; None where the exporter does not export the field."""

    gpu_index: int
    sm_util: float | None
    mem_bw_util: float | None
    mem_used_bytes: int | None
    power_w: float | None


def parse_dcgm_metrics(text: str) -> list[GpuReading]:
    """Per-GPU readings from a DCGM exporter's page (``gpu`` label; other labels such as Kubernetes pods ignored)."""
    values: dict[int, dict[str, float]] = defaultdict(dict)
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise ScrapeError(f"not Prometheus text: {exc}") from None
    for family in families:
        for sample in family.samples:
            if sample.name not in DCGM_FIELDS or "gpu" not in sample.labels:
                continue
            try:
                gpu = int(sample.labels["gpu"])
            except ValueError:
                continue
            if not math.isnan(sample.value):
                values[gpu][sample.name] = sample.value
    readings = []
    for gpu in sorted(values):
        v = values[gpu]
        used_mib = v.get(DCGM_FB_USED_MIB)
        readings.append(
            GpuReading(
                gpu_index=gpu,
                sm_util=v.get(DCGM_SM_ACTIVE),
                mem_bw_util=v.get(DCGM_DRAM_ACTIVE),
                mem_used_bytes=None if used_mib is None else int(used_mib * (1 << 20)),
                power_w=v.get(DCGM_POWER_W),
            )
        )
    return readings
