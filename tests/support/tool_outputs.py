"""Inputs shaped like the files vLLM's own tools write, for the format tests.

``bench_result`` follows ``vllm/benchmarks/serve.py`` (``--save-result --save-detailed``): the setup keys, the
metrics, and the per-request lists. ``metrics_scrapes`` drives the real ``prometheus_client`` library with vLLM
0.32's metric names, label names (model_name, engine) and types (vllm/v1/metrics/loggers.py) and renders its
exposition text once per scrape, adding each sample's timestamp in milliseconds as a scraper that keeps them does.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def bench_result(n: int = 20, *, seed: int = 0, failed: int = 0, **metadata: str) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    input_lens = rng.integers(20, 200, n).tolist()
    output_lens = rng.integers(50, 400, n).tolist()
    start = 1000.0 + np.sort(rng.uniform(0, 2, n))
    ttfts = rng.uniform(0.05, 0.5, n)
    itls = [list(rng.uniform(0.01, 0.03, out - 1)) for out in output_lens]
    latencies = [float(t + sum(i)) for t, i in zip(ttfts, itls, strict=True)]
    errors = [""] * n
    for i in range(failed):
        errors[i] = "ClientConnectorError: Cannot connect to host"
        output_lens[i], latencies[i], itls[i] = 0, 0.0, []
        ttfts[i] = 0.0
    result: dict[str, Any] = {
        "date": "20261123-101500",
        "endpoint_type": "vllm",
        "backend": "vllm",
        "label": None,
        "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "tokenizer_id": "meta-llama/Llama-3.1-8B-Instruct",
        "num_prompts": n,
        **metadata,
        "request_rate": "inf",
        "burstiness": 1.0,
        "max_concurrency": None,
        "duration": float(max(s + lat for s, lat in zip(start, latencies, strict=True)) - start.min()),
        "completed": n - failed,
        "failed": failed,
        "total_input_tokens": int(sum(input_lens)),
        "total_output_tokens": int(sum(output_lens)),
        "request_throughput": 1.0,
        "request_goodput": None,
        "output_throughput": 1.0,
        "total_token_throughput": 1.0,
        "input_lens": input_lens,
        "output_lens": output_lens,
        "ttfts": [float(t) for t in ttfts],
        "itls": [[float(x) for x in i] for i in itls],
        "latencies": latencies,
        "start_times": [float(s) for s in start],
        "queue_times": [0.0] * n,
        "generated_texts": ["" for _ in range(n)],
        "errors": errors,
        "max_output_tokens_per_s": 10.0,
        "max_concurrent_requests": n,
        "rtfx": 0.0,
        "mean_ttft_ms": float(np.mean(ttfts) * 1000),
    }
    return result


def metrics_scrapes(
    num_scrapes: int = 12,
    *,
    engines: tuple[str, ...] = ("0",),
    old_names: bool = False,
    start_ms: int = 1_763_900_000_000,
    gpus: int = 0,
) -> str:
    """Concatenated timestamped scrapes of a vLLM server (one engine per DP rank) made by prometheus_client; with
    ``gpus``, the node's DCGM exporter series too (dcgm-exporter's names, labels and units: ratios, MiB, W), stamped
    100 ms after vLLM's as a second scrape target would be. GPU g at scrape k: SM_ACTIVE = min(1, 0.08 k + 0.01 g),
    DRAM_ACTIVE = min(1, 0.06 k), FB_USED = 1000 + 100 k MiB, POWER_USAGE = 100 + 10 k + g W."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.exposition import generate_latest

    registry = CollectorRegistry()
    labels = ["model_name", "engine"]
    model = "tiny-llama"
    running = Gauge("vllm:num_requests_running", "running", labels, registry=registry)
    waiting = Gauge("vllm:num_requests_waiting", "waiting", labels, registry=registry)
    kv_name = "vllm:gpu_cache_usage_perc" if old_names else "vllm:kv_cache_usage_perc"
    kv = Gauge(kv_name, "KV-cache usage. 1 means 100 percent usage.", labels, registry=registry)
    preempt = Counter("vllm:num_preemptions", "preemptions", labels, registry=registry)
    prompt = Counter("vllm:prompt_tokens", "prefill tokens", labels, registry=registry)
    gen = Counter("vllm:generation_tokens", "generation tokens", labels, registry=registry)
    success = Counter("vllm:request_success", "finished", [*labels, "finished_reason"], registry=registry)
    ttft_buckets = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0]
    ttft = Histogram("vllm:time_to_first_token_seconds", "ttft", labels, registry=registry, buckets=ttft_buckets)
    tpot_name = "vllm:time_per_output_token_seconds" if old_names else "vllm:inter_token_latency_seconds"
    tpot = Histogram(
        tpot_name,
        "itl",
        labels,
        registry=registry,
        buckets=[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0],
    )
    e2e_buckets = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    e2e = Histogram("vllm:e2e_request_latency_seconds", "e2e", labels, registry=registry, buckets=e2e_buckets)
    info = Gauge(
        "vllm:cache_config_info",
        "Information of the LLMEngine CacheConfig",
        ["block_size", "cache_dtype", "gpu_memory_utilization", "num_gpu_blocks", "engine"],
        registry=registry,
        multiprocess_mode="mostrecent",
    )
    for engine in engines:  # vLLM creates every per-engine child at start-up, so counters show 0 from the first scrape
        for metric in (running, waiting, kv, preempt, prompt, gen):
            metric.labels(model_name=model, engine=engine)
        info.labels(
            block_size="128", cache_dtype="auto", gpu_memory_utilization="0.9", num_gpu_blocks="64", engine=engine
        ).set(1)
    out = []
    rng = np.random.default_rng(1)
    for scrape in range(num_scrapes):
        for rank, engine in enumerate(engines):
            lab = {"model_name": model, "engine": engine}
            running.labels(**lab).set(min(32, 4 * scrape + rank))
            waiting.labels(**lab).set(max(0, 20 - 3 * scrape))
            kv.labels(**lab).set(min(1.0, 0.1 * scrape))
            if scrape >= 9:
                preempt.labels(**lab).inc(2)
            prompt.labels(**lab).inc(100)
            gen.labels(**lab).inc(250 + rank)
            for _ in range(3):
                ttft.labels(**lab).observe(float(rng.uniform(0.05, 0.3)))
                tpot.labels(**lab).observe(float(rng.uniform(0.02, 0.05)))
                e2e.labels(**lab).observe(float(rng.uniform(1.0, 4.0)))
                success.labels(**lab, finished_reason="length").inc()
        stamp = start_ms + 500 * scrape
        for line in generate_latest(registry).decode().splitlines():
            out.append(line if line.startswith("#") or not line.strip() else f"{line} {stamp}")
        out.extend(_dcgm_scrape(gpus, scrape, stamp + 100))
    return "\n".join(out) + "\n"


def _dcgm_scrape(gpus: int, scrape: int, stamp: int) -> list[str]:
    from prometheus_client import CollectorRegistry, Gauge
    from prometheus_client.exposition import generate_latest

    if not gpus:
        return []
    registry = CollectorRegistry()
    labels = ["gpu", "UUID", "device", "modelName", "Hostname"]
    gauges = {
        "DCGM_FI_PROF_SM_ACTIVE": lambda g: min(1.0, 0.08 * scrape + 0.01 * g),
        "DCGM_FI_PROF_DRAM_ACTIVE": lambda g: min(1.0, 0.06 * scrape),
        "DCGM_FI_DEV_FB_USED": lambda g: 1000.0 + 100 * scrape,
        "DCGM_FI_DEV_POWER_USAGE": lambda g: 100.0 + 10 * scrape + g,
    }
    for name, value in gauges.items():
        gauge = Gauge(name, name, labels, registry=registry)
        for g in range(gpus):
            gauge.labels(str(g), f"GPU-{g:08d}", f"nvidia{g}", "NVIDIA H200", "node-1").set(value(g))
    return [
        line if line.startswith("#") or not line.strip() else f"{line} {stamp}"
        for line in generate_latest(registry).decode().splitlines()
    ]


def query_range(series: dict[str, list[float]], *, engine: str = "0", step_s: float = 1.0) -> dict[str, Any]:
    """A /api/v1/query_range response (matrix) with one series per metric name."""
    result = []
    for name, values in series.items():
        result.append(
            {
                "metric": {"__name__": name, "engine": engine, "model_name": "tiny-llama", "job": "vllm"},
                "values": [[1763900000 + i * step_s, repr(float(v))] for i, v in enumerate(values)],
            }
        )
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}
