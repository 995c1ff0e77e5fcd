"""Attach to a running vLLM server: drive a workload through its OpenAI API, scrape its /metrics, land one bundle.

Most vLLM deployments already run as a server, so this collector measures one from the outside with what any
server exposes: the OpenAI-compatible API (``/v1/models``, ``/v1/completions`` with streaming), ``/version`` and
the Prometheus ``/metrics`` (plus a DCGM exporter's page when given). The request list is the one the engine
predicts from (``engine.workload`` via ``collectors.job.plan_requests``): prompts are sent as token-id lists so
the server sees exactly ``isl`` tokens, with ``ignore_eos`` and ``max_tokens = osl`` so it produces exactly ``osl``.

Per request the client records when it sent the request, its first streamed token and its end (seconds since the
run's start on this host's monotonic clock) and the server's own token counts from the stream's usage chunk.
Retries happen only before the server streamed anything (connection refused, 429/502/503/504): a request whose
stream broke after its first token is recorded as broken, never re-sent, so no token is produced twice for one
request. The engine timeline comes from /metrics scraped at a fixed interval, each sample timed at the midpoint of
its HTTP exchange; counters are relative to a scrape taken just before the first request (so a server that has
served other traffic starts at zero). Recording goes through ``collectors.recorder`` (every sample flushed as taken;
an interrupted run lands as ``partial``; a killed one is recovered by ``python -m collectors recover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collectors.job import PlannedRequest, _iso, job_meta, plan_requests, prompt_token_ids
from collectors.recorder import WORK_DIR_NAME, Recorder, finalise
from collectors.scrape import (
    GENERATION_TOKENS,
    PREEMPTIONS,
    PROMPT_TOKENS,
    REQUEST_SUCCESS,
    ScrapeError,
    VllmScrape,
    parse_dcgm_metrics,
    parse_vllm_metrics,
)
from collectors.spec import JobSpec, SpecError

RETRY_STATUS = (429, 502, 503, 504)
BACKOFF_S = 0.5  # first retry's wait, doubled per attempt
# How long a scrape may take: a vLLM API server busy with the batch (on a 2-core host, sharing the cores with its
# engine core) answered /metrics in ~2 s, so a 2 s limit dropped every scrape taken while the KV cache was full; a
# slow scrape skips ticks (``_scrape_loop``), so waiting for it loses nothing
SCRAPE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServerInfo:
    """What a running server says about itself (read before the run)."""

    model: str  # the served model name (/v1/models id)
    root: str | None  # where it loaded the model from, as the server reports it
    max_model_len: int
    version: str | None
    engines: tuple[str, ...]
    cache_config: dict[str, str]  # cache_config_info labels of the first engine

    def int_label(self, key: str) -> int | None:
        value = self.cache_config.get(key)
        try:
            return int(value) if value not in (None, "None") else None
        except ValueError:
            return None


@dataclass(frozen=True)
class AttachOptions:
    """How to reach the server and how hard to drive it; the job holds the workload and the engine parameters."""

    url: str
    job: JobSpec
    metrics_url: str | None = None
    dcgm_url: str | None = None
    max_concurrency: int | None = None  # client-side cap on requests in flight; None: every request at its arrival
    scrape_interval_s: float = 0.5
    request_timeout_s: float = 600.0  # longest silence on a stream (a queued request waits for its first token)
    max_retries: int = 3

    @property
    def metrics(self) -> str:
        return self.metrics_url or self.url.rstrip("/") + "/metrics"


@dataclass
class RequestRecord:
    """One request as the client saw it."""

    request_id: str
    attempts: int = 0
    sent_s: float | None = None
    first_token_s: float | None = None
    finished_s: float | None = None
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    queue_time_s: float | None = None  # the server's, when it runs with --enable-per-request-metrics
    error: str | None = None


@dataclass
class ScrapeLog:
    """The scraper's own record: what it achieved, the first and last page for deltas."""

    baseline: VllmScrape | None = None
    last: VllmScrape | None = None
    times_s: list[float] = field(default_factory=list)
    failures: int = 0
    last_error: str | None = None
    dcgm_samples: int = 0


async def read_server_info(client: Any, opts: AttachOptions) -> tuple[ServerInfo, VllmScrape]:
    """/v1/models, /version and one /metrics scrape; a clear error when the URL is not a vLLM server."""
    base = opts.url.rstrip("/")
    try:
        models = (await client.get(base + "/v1/models", timeout=30)).raise_for_status().json()
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise SpecError(f"--url {opts.url}: no OpenAI API answered at /v1/models ({reason})") from None
    data = models.get("data") or []
    if not data:
        raise SpecError(f"--url {opts.url}: /v1/models lists no model")
    version = None
    with contextlib.suppress(Exception):
        version = (await client.get(base + "/version", timeout=10)).json().get("version")
    scrape = await scrape_vllm(client, opts.metrics)
    first_engine = scrape.engines[0] if scrape.engines else "0"
    info = ServerInfo(
        model=str(data[0]["id"]),
        root=data[0].get("root"),
        max_model_len=int(data[0].get("max_model_len") or 0),
        version=version,
        engines=scrape.engines,
        cache_config=scrape.cache_config.get(first_engine, {}),
    )
    return info, scrape


async def scrape_vllm(client: Any, metrics_url: str) -> VllmScrape:
    try:
        response = await client.get(metrics_url, timeout=10)
        response.raise_for_status()
    except Exception as exc:
        raise SpecError(f"--metrics-url {metrics_url}: {type(exc).__name__}: {exc}") from None
    try:
        return parse_vllm_metrics(response.text)
    except ScrapeError as exc:
        raise SpecError(f"--metrics-url {metrics_url}: {exc}") from None


class Attach:
    """One attached run: the request drivers and the scraper share the run's clock and its Recorder."""

    def __init__(self, opts: AttachOptions, info: ServerInfo, vocab_size: int, recorder: Recorder) -> None:
        self.opts = opts
        self.info = info
        self.vocab_size = vocab_size
        self.recorder = recorder
        self.plan = plan_requests(opts.job)
        self.records = {p.request_id: RequestRecord(p.request_id) for p in self.plan}
        self.scrapes = ScrapeLog()
        self.t0 = 0.0
        self.finished = 0
        self.on_progress: Callable[[Attach], None] | None = None

    def now_s(self) -> float:
        return time.monotonic() - self.t0

    async def run(self, client: Any, baseline: VllmScrape) -> None:
        """Send every request at its arrival (under the concurrency cap) while the scraper samples /metrics."""
        self.scrapes.baseline = self.scrapes.last = baseline
        self.t0 = time.monotonic()
        self.recorder.engine_sample((0.0, baseline.running, baseline.waiting, round(baseline.kv_usage, 6), 0, 0, 0))
        stop = asyncio.Event()
        scraper = asyncio.create_task(self._scrape_loop(client, stop))
        cap = asyncio.Semaphore(self.opts.max_concurrency or len(self.plan))
        try:
            await asyncio.gather(*(self._request(client, index, req, cap) for index, req in enumerate(self.plan)))
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper
            with contextlib.suppress(Exception):
                await asyncio.shield(self._scrape_once(client))  # the counters after the last request

    async def _scrape_loop(self, client: Any, stop: asyncio.Event) -> None:
        interval = self.opts.scrape_interval_s
        tick = 1
        while not stop.is_set():
            delay = self.t0 + tick * interval - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                if stop.is_set():
                    return
            await self._scrape_once(client)
            tick = max(tick + 1, int(self.now_s() / interval) + 1)  # a slow scrape skips ticks, never bunches them

    async def _scrape_once(self, client: Any) -> None:
        sent = time.monotonic()
        try:
            timeout = max(SCRAPE_TIMEOUT_S, 4 * self.opts.scrape_interval_s)
            response = await client.get(self.opts.metrics, timeout=timeout)
            response.raise_for_status()
            scrape = parse_vllm_metrics(response.text)
        except Exception as exc:
            self.scrapes.failures += 1
            self.scrapes.last_error = f"{type(exc).__name__}: {exc}"
            return
        t_s = round((sent + time.monotonic()) / 2 - self.t0, 6)
        self.scrapes.times_s.append(t_s)
        self.scrapes.last = scrape
        base = self.scrapes.baseline.counters if self.scrapes.baseline else {}
        rise = {name: round(scrape.counters[name] - base.get(name, 0.0)) for name in scrape.counters}
        self.recorder.engine_sample(
            (
                t_s,
                scrape.running,
                scrape.waiting,
                round(scrape.kv_usage, 6),
                rise[PROMPT_TOKENS],
                rise[GENERATION_TOKENS],
                rise[PREEMPTIONS],
            )
        )
        if self.opts.dcgm_url:
            await self._scrape_dcgm(client, t_s)
        if self.on_progress is not None:
            self.on_progress(self)

    async def _scrape_dcgm(self, client: Any, t_s: float) -> None:
        try:
            response = await client.get(self.opts.dcgm_url, timeout=max(2.0, 4 * self.opts.scrape_interval_s))
            response.raise_for_status()
            readings = parse_dcgm_metrics(response.text)
        except Exception as exc:
            self.scrapes.last_error = f"DCGM: {type(exc).__name__}: {exc}"
            return
        for g in readings:
            self.recorder.gpu_sample((t_s, g.gpu_index, g.sm_util, g.mem_bw_util, g.mem_used_bytes, g.power_w))
        self.scrapes.dcgm_samples += 1

    async def _request(self, client: Any, index: int, req: PlannedRequest, cap: asyncio.Semaphore) -> None:
        await asyncio.sleep(max(0.0, req.arrival_s - self.now_s()))
        async with cap:
            record = self.records[req.request_id]
            body = {
                "model": self.info.model,
                "prompt": prompt_token_ids(index, req.isl, self.vocab_size, self.opts.job.seed),
                "max_tokens": req.osl,
                "min_tokens": req.osl,
                "ignore_eos": True,
                "temperature": 0.0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            try:
                await self._send_with_retries(client, body, record)
            except Exception as exc:  # one bad response must not lose the other requests' records
                record.error = f"{type(exc).__name__}: {exc}"
        self.finished += 1
        self._record(req, record)

    async def _send_with_retries(self, client: Any, body: dict[str, Any], record: RequestRecord) -> None:
        """Send until the server streams something; a retry is only ever made before the first token."""
        while True:
            record.attempts += 1
            retry_reason = await self._stream_once(client, body, record)
            if retry_reason is None:
                return
            if record.first_token_s is not None or record.attempts > self.opts.max_retries:
                record.error = retry_reason
                return
            await asyncio.sleep(BACKOFF_S * 2 ** (record.attempts - 1))

    async def _stream_once(self, client: Any, body: dict[str, Any], record: RequestRecord) -> str | None:
        """One attempt; returns why it should be retried (None: done, successfully or for good)."""
        import httpx

        url = self.opts.url.rstrip("/") + "/v1/completions"
        headers = {"X-Request-Id": f"{self.opts.job.run_id}-{record.request_id}-a{record.attempts}"}
        record.sent_s = round(self.now_s(), 6)
        received = 0
        try:
            async with client.stream("POST", url, json=body, headers=headers) as response:
                if response.status_code in RETRY_STATUS:
                    return f"HTTP {response.status_code}"
                if response.status_code != 200:
                    text = (await response.aread()).decode(errors="replace")[:300]
                    record.error = f"HTTP {response.status_code}: {text}"
                    return None
                async for line in response.aiter_lines():
                    received += self._on_line(line, record)
        except (httpx.TransportError, httpx.StreamError) as exc:
            if record.first_token_s is None:
                return f"{type(exc).__name__}: {exc}"
            record.error = f"stream broke after {received} chunks: {type(exc).__name__}: {exc}"
            record.output_tokens = record.output_tokens or received
            return None
        record.finished_s = round(self.now_s(), 6)
        if record.output_tokens is None:
            record.output_tokens = received  # no usage chunk: one streamed chunk per token (vLLM's DELTA outputs)
        return None

    def _on_line(self, line: str, record: RequestRecord) -> int:
        """Handle one server-sent-events line; returns 1 for a chunk carrying output."""
        if not line.startswith("data:"):
            return 0
        payload = line[5:].strip()
        if payload == "[DONE]" or not payload:
            return 0
        chunk = json.loads(payload)
        if chunk.get("usage"):
            usage = chunk["usage"]
            record.output_tokens = int(usage.get("completion_tokens") or 0)
            record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            queue_ms = (chunk.get("metrics") or {}).get("queue_time_ms")
            record.queue_time_s = None if queue_ms is None else round(queue_ms / 1000, 6)
        if chunk.get("choices"):
            if record.first_token_s is None:
                record.first_token_s = round(self.now_s(), 6)
            return 1
        return 0

    def _record(self, req: PlannedRequest, record: RequestRecord) -> None:
        first_scheduled = None
        if record.queue_time_s is not None and record.sent_s is not None:
            first_scheduled = round(record.sent_s + record.queue_time_s, 6)
        self.recorder.request_event(
            req.request_id,
            arrival_s=record.sent_s,
            first_scheduled_s=first_scheduled,
            first_token_s=record.first_token_s,
            finished_s=record.finished_s if record.error is None else None,
            output_tokens=record.output_tokens,
        )

    def extras(self) -> dict[str, Any]:
        """run.json ``collector`` entries: how the run was driven and scraped, and the server's own deltas."""
        times = self.scrapes.times_s
        gaps = [b - a for a, b in itertools.pairwise(times)]
        base, last = self.scrapes.baseline, self.scrapes.last
        deltas = {}
        if base is not None and last is not None:
            deltas = {
                name.removeprefix("vllm:"): round(last.counters[name] - base.counters[name]) for name in base.counters
            }
        failed = {r.request_id: r.error for r in self.records.values() if r.error}
        return {
            "mode": "attach",
            "server_url": self.opts.url,
            "metrics_url": self.opts.metrics,
            "dcgm_url": self.opts.dcgm_url,
            "server": {
                "model": self.info.model,
                "root": self.info.root,
                "version": self.info.version,
                "engines": list(self.info.engines),
                "cache_config_info": self.info.cache_config,
            },
            "max_concurrency": self.opts.max_concurrency,
            "scrape_interval_s": self.opts.scrape_interval_s,
            "scrapes": len(times),
            "scrape_failures": self.scrapes.failures,
            "scrape_last_error": self.scrapes.last_error,
            "scrape_gap_s": _stats(gaps),
            "dcgm_samples": self.scrapes.dcgm_samples,
            "server_counter_rise": deltas,
            "server_histograms": _histogram_deltas(base, last),
            "attempts": sum(r.attempts for r in self.records.values()),
            "retried_requests": sum(1 for r in self.records.values() if r.attempts > 1),
            "failed_requests": failed,
            "prompt_tokens_reported": sum(r.prompt_tokens or 0 for r in self.records.values()),
            "preemptions_counted": deltas.get(PREEMPTIONS.removeprefix("vllm:")),
            "requests_succeeded_server": deltas.get(REQUEST_SUCCESS.removeprefix("vllm:")),
            "first_scheduled_note": "sent_s + the server's queue_time_ms (--enable-per-request-metrics); null without",
        }


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "mean": None, "worst": None}
    return {
        "median": round(statistics.median(values), 4),
        "mean": round(statistics.fmean(values), 4),
        "worst": round(max(values), 4),
    }


def _histogram_deltas(base: VllmScrape | None, last: VllmScrape | None) -> dict[str, Any]:
    if last is None:
        return {}
    out = {}
    for name, hist in last.histograms.items():
        delta = hist.minus(base.histograms.get(name) if base else None)
        out[name.removeprefix("vllm:")] = {"buckets": delta.buckets, "sum": round(delta.sum, 6), "count": delta.count}
    return out


def attach_meta(opts: AttachOptions, info: ServerInfo, model_config: dict[str, Any], device: str) -> dict[str, Any]:
    """run.json fields: the job's, with what the server reported replacing what the command line assumed."""
    job = opts.job
    meta = job_meta(job, model_config, device)
    blocks = info.int_label("num_gpu_blocks")
    meta.update(
        host=urlsplit(opts.url).hostname or opts.url,
        model_name=info.model,  # the served model name (the config may sit in a directory of any name)
        vllm_version=info.version,
        vllm_distribution=None,  # a server does not say which build it is
        sample_interval_s=opts.scrape_interval_s,
        kv_blocks=blocks,
        kv_capacity_tokens=info.int_label("kv_cache_size_tokens"),
        notes=(
            f"Measured by cliffscope's attach collector against the vLLM server at {opts.url} "
            f"(engine timeline from its /metrics every {opts.scrape_interval_s} s; per-request times on the client's "
            "clock; ignore_eos with max_tokens = osl). "
            + ("vLLM CPU backend; not a GPU measurement. " if device == "cpu" else "")
            + job.notes
        ).strip(),
    )
    return meta


async def _attach_async(
    opts: AttachOptions,
    work_root: Path,
    resolve: Callable[[ServerInfo], tuple[JobSpec, dict[str, Any], str]],
    progress: Callable[[Attach], None] | None,
    holder: dict[str, Any],
) -> tuple[str, str | None]:
    import httpx

    limit = opts.max_concurrency or opts.job.num_requests
    timeout = httpx.Timeout(connect=10.0, read=opts.request_timeout_s, write=30.0, pool=None)
    limits = httpx.Limits(max_connections=limit + 4, max_keepalive_connections=limit + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        info, baseline = await read_server_info(client, opts)
        job, model_config, device = resolve(info)
        opts = AttachOptions(**{**opts.__dict__, "job": job})
        check_fits(opts, info)
        meta = attach_meta(opts, info, model_config, device)
        plan = plan_requests(job)
        recorder = Recorder(
            work_root / WORK_DIR_NAME / job.run_id,
            meta,
            [{"request_id": p.request_id, "isl": p.isl, "osl": p.osl, "arrival_s": p.arrival_s} for p in plan],
        )
        run = Attach(opts, info, int(model_config.get("vocab_size", 32000)), recorder)
        run.on_progress = progress
        holder["run"] = run
        t0_wall = time.time()
        recorder.update_meta(created_at=_iso(t0_wall), run_t0_wall=t0_wall)
        status, error = "complete", None
        task = asyncio.ensure_future(run.run(client, baseline))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            status, error = "partial", "interrupted (SIGTERM or Ctrl-C) before every request finished"
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGTERM)
        failed = [rid for rid, rec in run.records.items() if rec.error or rec.finished_s is None]
        if status == "complete" and failed:
            status, error = (
                "partial",
                f"{len(failed)} request(s) did not finish: "
                + "; ".join(f"{rid}: {run.records[rid].error}" for rid in failed[:5]),
            )
        return status, error


def check_fits(opts: AttachOptions, info: ServerInfo) -> None:
    """Requests longer than the server's context limit would be refused one by one: refuse the run instead."""
    if info.max_model_len <= 0:
        return
    longest = max((p.isl + p.osl for p in plan_requests(opts.job)), default=0)
    if longest > info.max_model_len:
        raise SpecError(
            f"--workload {opts.job.workload}: a request of {longest} tokens exceeds the server's max_model_len "
            f"{info.max_model_len}; use shorter requests or restart the server with a larger --max-model-len"
        )


@dataclass(frozen=True)
class AttachResult:
    run_id: str
    status: str  # complete | partial | failed
    bundle: Path
    wall_s: float
    preemptions: int
    error: str | None
    extras: dict[str, Any]


def run_attached(
    opts: AttachOptions,
    inbox: Path,
    resolve: Callable[[ServerInfo], tuple[JobSpec, dict[str, Any], str]],
    progress: Callable[[Attach], None] | None = None,
) -> AttachResult:
    """Attach, drive the workload, and land one bundle in ``inbox`` (``partial`` when interrupted by Ctrl-C/SIGTERM).

    ``resolve`` turns what the server reported into the job (engine parameters the server does not expose come from
    the command line), the model's config.json and the device name. Errors before the first request (no server, a
    bad flag) raise SpecError and land nothing.
    """
    holder: dict[str, Any] = {}
    started = time.monotonic()
    try:
        status, error = asyncio.run(_attach_async(opts, inbox, resolve, progress, holder))
    except KeyboardInterrupt:
        status, error = "partial", "interrupted (Ctrl-C) before every request finished"
    run: Attach | None = holder.get("run")
    if run is None:
        raise SpecError("interrupted before the run started; nothing was recorded")
    wall_s = time.monotonic() - started
    extras = run.extras() | {"wall_s": round(run.now_s(), 3) if run.t0 else 0.0}
    run.recorder.update_meta(collector=extras)
    run.recorder.close()
    bundle = finalise(run.recorder.work_dir, inbox, status, error)
    return AttachResult(
        run.opts.job.run_id, status, bundle, wall_s, int(extras.get("preemptions_counted") or 0), error, extras
    )
