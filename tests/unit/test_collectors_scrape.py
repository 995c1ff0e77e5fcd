"""Parsing a vLLM /metrics page (two engines, as a DP server exposes them) and a DCGM exporter page."""

from __future__ import annotations

import pytest

from collectors.scrape import PREEMPTIONS, ScrapeError, parse_dcgm_metrics, parse_vllm_metrics

VLLM_TWO_ENGINES = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 12.0
vllm:num_requests_running{engine="1",model_name="m"} 10.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.9
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="m"} 4.0
vllm:num_preemptions_total{engine="1",model_name="m"} 1.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="1000"} 1.0
vllm:cache_config_info{block_size="16",engine="1",num_gpu_blocks="1000"} 1.0
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.0",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 3.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 3.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 4.5
vllm:e2e_request_latency_seconds_bucket{engine="1",le="1.0",model_name="m"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="1",le="+Inf",model_name="m"} 1.0
vllm:e2e_request_latency_seconds_count{engine="1",model_name="m"} 1.0
vllm:e2e_request_latency_seconds_sum{engine="1",model_name="m"} 0.5
"""

DCGM = """\
# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).
# TYPE DCGM_FI_DEV_POWER_USAGE gauge
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-a",Hostname="h",pod="vllm-0"} 512.5
DCGM_FI_DEV_POWER_USAGE{gpu="1",UUID="GPU-b",Hostname="h"} 100.0
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-a",Hostname="h"} 1024
# HELP DCGM_FI_PROF_DRAM_ACTIVE Ratio of cycles the device memory interface is active sending or receiving data.
# TYPE DCGM_FI_PROF_DRAM_ACTIVE gauge
DCGM_FI_PROF_DRAM_ACTIVE{gpu="0",UUID="GPU-a",Hostname="h"} 0.83
"""


def test_two_engines_are_summed_and_kv_averaged() -> None:
    scrape = parse_vllm_metrics(VLLM_TWO_ENGINES)
    assert (scrape.running, scrape.waiting) == (22, 3)
    assert scrape.kv_usage == pytest.approx(0.7)
    assert scrape.counters[PREEMPTIONS] == 5
    assert scrape.engines == ("0", "1") and scrape.cache_config["1"]["num_gpu_blocks"] == "1000"
    hist = scrape.histograms["vllm:e2e_request_latency_seconds"]
    assert hist.count == 4 and hist.sum == 5.0 and hist.buckets == {"1.0": 3.0, "+Inf": 4.0}


def test_a_page_without_vllm_gauges_is_refused() -> None:
    with pytest.raises(ScrapeError, match="vllm:num_requests_running"):
        parse_vllm_metrics(DCGM)


def test_dcgm_readings_per_gpu() -> None:
    first, second = parse_dcgm_metrics(DCGM)
    assert (first.gpu_index, first.power_w, first.mem_used_bytes, first.mem_bw_util) == (0, 512.5, 1 << 30, 0.83)
    assert first.sm_util is None  # not exported here: left empty, never guessed
    assert (second.gpu_index, second.power_w, second.mem_used_bytes) == (1, 100.0, None)
