"""``python -m collectors attach``: command-line flags plus what the server reports -> one attached run."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from collectors.attach import Attach, AttachOptions, ServerInfo, run_attached
from collectors.inbox import open_inbox
from collectors.spec import EngineParams, JobSpec, SpecError, resolve_model_dir


def model_config_dir(args: argparse.Namespace, info: ServerInfo) -> Path:
    """The model's config.json: --model-config, else the directory the server says it loaded (when readable here)."""
    if args.model_config:
        return resolve_model_dir(args.model_config)
    if info.root and (Path(info.root) / "config.json").is_file():
        return Path(info.root).resolve()
    raise SpecError(
        f"the server loaded its model from {info.root!r}, which is not readable here: give --model-config "
        "(a name under data/models or a directory holding the model's config.json)"
    )


def job_from_server(args: argparse.Namespace, info: ServerInfo, stamp: str) -> tuple[JobSpec, dict[str, Any], str]:
    """The run's JobSpec: the server's reported cache/context settings, the rest from the command line."""
    model_dir = model_config_dir(args, info)
    model_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    cache = info.cache_config
    block_size = info.int_label("block_size")
    if block_size is None:
        raise SpecError(f"{args.url}: its /metrics has no vllm:cache_config_info block_size (vLLM too old?)")
    utilisation = cache.get("gpu_memory_utilization")
    device = args.device.strip()
    engine = EngineParams(
        model=str(model_dir),
        load_format="auto",  # not exposed by the server; recorded as unknown in the notes
        dtype=args.dtype or str(model_config.get("torch_dtype") or "auto"),
        kv_cache_dtype="fp8" if str(cache.get("cache_dtype", "auto")).startswith("fp8") else "auto",
        dp=args.dp or max(1, len(info.engines)),
        tp=args.tp,
        pp=args.pp,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        enable_chunked_prefill=not args.no_chunked_prefill,
        block_size=block_size,
        max_model_len=info.max_model_len,
        gpu_memory_utilization=None if device == "cpu" or utilisation in (None, "None") else float(utilisation),
        kv_cache_memory_bytes=info.int_label("kv_cache_memory_bytes"),
        enable_prefix_caching=cache.get("enable_prefix_caching") == "True",
        device="cpu" if device == "cpu" else "cuda",
    )
    name = f"{args.name or 'attach-' + info.model}-{stamp}"
    job = JobSpec(
        name=name,
        engine=engine,
        num_requests=args.num_requests,
        workload=args.workload,
        seed=args.seed,
        arrival_rate=args.arrival_rate,
        sample_gpus=bool(args.dcgm_url),
        notes="Engine flags not exposed by the server (max_num_seqs, max_num_batched_tokens, tp/pp, dtype) were "
        "given on the command line.",
    )
    job.validate(check_model=False)
    return job, model_config, device


def attach_from_args(args: argparse.Namespace) -> int:
    """Run ``attach``; exit 0 when every request finished, 1 when the run is partial."""
    from collectors.progress import RequestProgress

    for flag, value in (("--num-requests", args.num_requests), ("--retries", args.retries + 1)):
        if value < 1:
            raise SpecError(f"{flag} must be positive, got {value}")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise SpecError(f"--max-concurrency must be at least 1, got {args.max_concurrency}")
    if not args.scrape_interval > 0:
        raise SpecError(f"--scrape-interval must be > 0 s, got {args.scrape_interval}")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    placeholder = JobSpec(name="attach", num_requests=args.num_requests, workload=args.workload, seed=args.seed)
    opts = AttachOptions(
        url=args.url,
        job=placeholder,
        metrics_url=args.metrics_url,
        dcgm_url=args.dcgm_url,
        max_concurrency=args.max_concurrency,
        scrape_interval_s=args.scrape_interval,
        request_timeout_s=args.request_timeout,
        max_retries=args.retries,
    )
    bar = RequestProgress(args.num_requests, "attach", enabled=not args.quiet)

    def on_scrape(run: Attach) -> None:
        last = run.scrapes.last
        base = run.scrapes.baseline
        if last is not None and base is not None:
            preempted = round(last.counters["vllm:num_preemptions_total"] - base.counters["vllm:num_preemptions_total"])
            bar.update(run.finished, last.running, last.waiting, last.kv_usage, preempted)

    inbox = open_inbox(args.inbox)
    try:
        result = run_attached(opts, inbox.local, lambda info: job_from_server(args, info, stamp), on_scrape)
    finally:
        bar.close()
    where = inbox.publish(result.bundle, result.status)
    gaps = result.extras.get("scrape_gap_s", {})
    print(
        f"{result.status}: {result.run_id} in {result.wall_s:.1f} s, {result.preemptions} preemptions, "
        f"{result.extras.get('scrapes')} scrapes (gap median {gaps.get('median')} s, worst {gaps.get('worst')} s) "
        f"-> {where}"
    )
    if result.error:
        print(f"  {result.error}")
    return 0 if result.status == "complete" else 1
