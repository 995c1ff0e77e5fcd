"""The GPU step model held to published runs (issue #11 §3): records as predictable cases, fitted per device with
folds by source and by case, and the paper's table from fits that never saw the case they predict.

A published record (``engine.formats.published``) states a layout, some flags and a few figures. It becomes a
case of the fitter (``engine.fidelity.calibrate.fit``) like a measured run: a Scenario from the stated flags, vLLM's
defaults for the unstated ones (listed per case in ``defaults``), a request list, and the figures to match.

- ``paper`` records (arXiv:2605.19775, 8×H200): 2,000 (§V) or 500–10,000 (§IV) requests of Meta's Natural
  Reasoning dataset submitted at once, so they are re-timed from a step trace like the bundled batches. Output
  lengths are a per-family statement (``OUTPUT_LENGTHS``), because the paper gives its dataset's response lengths,
  not each model's.
- ``bench`` records (``vllm bench serve`` results): predicted as served by ``engine.served`` when that module is
  present (arrival process, max_concurrency closed loop, API-server cost); without it they are listed as not
  scored, never predicted some other way.

Fits are per device (the GPU's name) and vLLM engine generation (V0 before 0.8.0, V1 from it; ``engine_generation``):
exact versions of published runs are often unstated, so they share a group within their generation. A bench
fold is fitted in two stages (``engine.fidelity.calibrate.cross_validate(pool_by=...)``): pooled over every GPU of
its engine generation outside the fold, then the device's own records outside the fold refit its efficiencies from
there (``fit_on_pooled``); a record whose device group has no other source (degree) is scored by the pooled fit
alone, and the per-device scores (datasheet defaults) stay beside those. V0
records take V0's scheduler defaults (``engine.vllm_rules.v0_scheduler_flags``, listed in their ``defaults``).
A record whose figure is out of reach of every physical parameter set (``physical_floor``: the prediction with
every efficiency at 1 and every overhead at its lower bound is still slower than the published time) cannot inform
the parameters: it is scored, never fitted, and the report says so with both numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from engine.catalog import GpuSpec, load_gpu, load_model
from engine.fidelity.calibrate import (
    PARAM_BOUNDS,
    Evaluator,
    FitResult,
    cross_validate,
    fit,
    parameter_rows,
)
from engine.fidelity.published_kv import lacks_peer_to_peer
from engine.fidelity.workers import figure_workers, figures_of
from engine.perf import Calibration
from engine.scenario import Scenario
from engine.workload import REASONING_MAX_OSL, REASONING_OSL_MEDIAN, request_lengths

PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "data" / "published"
PAPER_CITATION = "arXiv:2605.19775 (Arif et al., 'Understanding Inference Scaling for LLMs', 2026)"
# The four cases whose best layout the paper states (§V-B, §V-C), by model.
PAPER_CASES: dict[str, str] = {
    "DeepSeek-R1-Distill-Qwen-14B": "14B",
    "DeepSeek-R1-Distill-Qwen-32B": "32B",
    "Llama-3.1-405B": "405B",
    "DeepSeek-R1": "R1",
}
# vLLM's defaults for flags a record leaves unstated that do not depend on the device (vLLM V1: block size 16 for
# non-MLA attention, the checkpoint's bf16, KV in the model dtype, prefix caching on). The device- and release-
# dependent ones (gpu_memory_utilization, max_num_seqs, max_num_batched_tokens) come from engine.vllm_rules through
# defaults_of_release.
VLLM_DEFAULTS: dict[str, Any] = {
    "block_size": 16,
    "dtype": "bfloat16",
    "kv_cache_dtype": "auto",
    "enable_prefix_caching": True,
}


def defaults_of_release(vllm_version: str, gpu: str, max_model_len: int) -> dict[str, Any]:
    """``VLLM_DEFAULTS`` plus what the release a record ran sets on its device through the OpenAI server: the
    ``gpu_memory_utilization`` default (0.92 from 0.20) and ``max_num_seqs`` / ``max_num_batched_tokens``
    (``engine.vllm_rules.scheduler_defaults``, the rule the start-up logs are sized by: 1,024 sequences and an 8,192-
    token budget on an H100 or H200, 256 and 2,048 on an A100, whose 0.10.1.1 logs print "Chunked prefill is enabled
    with max_num_batched_tokens=2048"). A record that states no version takes the installed release's."""
    from engine.vllm_rules import scheduler_defaults, vllm_rules

    rules = vllm_rules(release_of(vllm_version))
    scheduler = scheduler_defaults(rules, load_gpu(gpu), max_model_len)
    return {
        **VLLM_DEFAULTS,
        "gpu_memory_utilization": rules.default_gpu_memory_utilization,
        "max_num_seqs": scheduler.max_num_seqs,
        "max_num_batched_tokens": scheduler.max_num_batched_tokens,
    }


def release_of(vllm_version: str) -> str:
    """The release whose rules a bench or paper record takes: its own, or the installed one when it states none."""
    from engine.vllm_rules import DEFAULT_VLLM_VERSION

    return DEFAULT_VLLM_VERSION if vllm_version == "unstated" else vllm_version


# The paper tuned max_num_batched_tokens (§III: "We utilize the default FCFS scheduling policy but tune the
# max_num_batched_tokens and max_num_seqs parameters") and states no value. The budget decides a PP layout's
# micro-batches (engine.perf.round_cost: a decode batch within one budget is ONE micro-batch, the (p−1)/p bubble;
# vLLM V1's scheduler fills each batch-queue slot with every schedulable request up to the budget). Where the
# paper states that a model's PP run filled its pipeline, the record takes the fastest budget of TUNED_BUDGETS at
# the datasheet defaults (the operator's tuning; listed in its defaults); elsewhere vLLM's default stays — the
# paper says 405B's PP ran "with large bubbles" (§V-C) and gives 14B's PP=2+TP=4 as 3.5× slower than DP=8 (§V-B).
PIPELINE_FILLED: dict[str, str] = {
    "DeepSeek-R1": "§V-C: 'The reduced memory footprint allows R1 to support a higher micro-batch depth than 405B, "
    "effectively filling the pipeline bubbles.'",
}
TUNED_BUDGETS = (8192, 4096, 2048, 1024, 512, 256)


def tuned_budget(scenario: Scenario, lengths: np.ndarray) -> tuple[int, dict[int, float]]:
    """The max_num_batched_tokens of TUNED_BUDGETS that completes the run first with the default calibration."""
    from engine.simulate import predict

    times = {
        b: float(predict(replace(scenario, max_num_batched_tokens=b), lengths).summary["completion_s"])
        for b in TUNED_BUDGETS
    }
    return min(times, key=lambda b: times[b]), times


@dataclass(frozen=True)
class OutputLengths:
    """The output lengths a model family's paper runs are predicted with, and where that comes from."""

    family: str
    reasoning_model: bool
    workload: str  # engine.workload spec
    source: str


REASONING_SOURCE = (
    f"the paper's Natural Reasoning profile (§III-B, Fig. 1(b): 45 % of responses exceed 5,000 tokens) as "
    f"engine.workload 'reasoning' (median {REASONING_OSL_MEDIAN:,.0f}, capped at {REASONING_MAX_OSL:,})"
)
OUTPUT_LENGTHS: dict[str, OutputLengths] = {
    "DeepSeek-R1-Distill": OutputLengths(
        "DeepSeek-R1-Distill-*", True, "reasoning",
        "reasoning model (§III-C: 'fine-tuned to output long chain-of-thought traces'); " + REASONING_SOURCE,
    ),
    "DeepSeek-R1": OutputLengths(
        "DeepSeek-R1", True, "reasoning",
        "reasoning model (§III-C: 'emerging reasoning-centric sparse architectures'); " + REASONING_SOURCE,
    ),
    "Llama-3.1": OutputLengths(
        "Llama-3.1-*", False, "reasoning",
        "NOT a reasoning model (§III-C: 'a standard dense transformer serving as the heavy-compute baseline'); the "
        "paper states no output lengths for it, so the dataset's response profile is applied as an assumption — "
        "the report shows what the published time implies against it (physical floor)",
    ),
}  # fmt: skip


V1_DEFAULT_FROM = (0, 8, 0)  # vLLM's V1 engine is the default from 0.8.0 (engine.vllm_rules: V0 before 0.8.0)


def engine_generation(vllm_version: str) -> str:
    """ "V0" for a stated version before 0.8.0, else "V1" (an unstated one is taken as the current default engine;
    the paper states "We employ the vLLM v1 inference engine", §III)."""
    from engine.vllm_rules import parse_version

    if vllm_version == "unstated":
        return "V1"
    return "V0" if parse_version(vllm_version) < V1_DEFAULT_FROM else "V1"


def output_lengths_of(model: str) -> OutputLengths:
    """The family entry of OUTPUT_LENGTHS for a model name (longest matching prefix); an unknown family is an
    error naming the table, never a silent reasoning profile."""
    matches = [k for k in OUTPUT_LENGTHS if model.startswith(k)]
    if not matches:
        raise ValueError(
            f"model {model!r}: no output-length statement for its family in engine.fidelity.published_fit."
            "OUTPUT_LENGTHS; add one with its source"
        )
    return OUTPUT_LENGTHS[max(matches, key=len)]


@dataclass(frozen=True)
class PublishedCase:
    """A published record as the fitter sees a run (the attributes engine.fidelity.calibrate reads)."""

    run_id: str
    name: str
    kind: str  # paper | bench
    source: str  # URL or citation
    publisher: str | None = field(default=None, kw_only=True)  # the source fold when stated (one lab's pages)
    case: str  # paper: the model's case label (14B, 32B, 405B, R1, 8B); bench: the record id
    scenario: Scenario
    device: GpuSpec
    device_key: str
    lengths: np.ndarray = field(repr=False)
    measured: dict[str, float] = field(repr=False)
    defaults: dict[str, Any]  # unstated flags -> the vLLM default used
    output_lengths: str  # where the request lengths come from
    meta: dict[str, Any] = field(default_factory=dict, repr=False)
    arrivals_at_start: bool = True
    prefix_caching: bool = True
    arrival_steps: np.ndarray | None = None
    engine: str = field(default="V1", kw_only=True)  # vLLM's engine generation (engine_generation)

    @property
    def group(self) -> tuple[str, str]:
        """One fit per GPU and vLLM engine generation: V0 and V1 schedule, chunk prefills and run MLA differently
        (with one group per GPU, a fit on dstack's vLLM 0.7.4 DeepSeek-R1 runs on 8×H200 missed GPUStack's 0.11.0
        ones by up to 5×, and the other way round by up to 4×): a software difference, not physics."""
        return (self.device_key, f"published {self.engine}")

    @property
    def layout(self) -> str:
        s = self.scenario
        return f"DP{s.dp}·TP{s.tp}·PP{s.pp}"


# Published figure (the record's units) -> the prediction summary's key and the factor to seconds.
FIGURE_KEYS: dict[str, tuple[str, float]] = {
    "completion_s": ("completion_s", 1.0),
    "duration_s": ("completion_s", 1.0),
    "mean_ttft_ms": ("ttft_mean_s", 1e-3),
    "mean_tpot_ms": ("tpot_mean_s", 1e-3),
    "mean_e2el_ms": ("e2e_mean_s", 1e-3),
}


def measured_figures(record: Any) -> dict[str, float]:
    out = {}
    for name, (key, factor) in FIGURE_KEYS.items():
        value = record.figure(name)
        if value is not None:
            out[key] = float(value) * factor
    return out


def derived_mean_tpot_ms(record: Any) -> float | None:
    """Mean TPOT of a bench record that prints mean E2EL and mean TTFT but no TPOT, where that is exact arithmetic.

    vLLM's bench takes each request's TPOT as (latency − TTFT) / (output tokens − 1) (``calculate_metrics``;
    engine.served.bench_metrics does the same), so when every request generated the same L tokens the mean TPOT is
    (mean E2EL − mean TTFT) / (L − 1). Every request generated L when all asked for L (random_range_ratio 0) and the
    run's total is completed × L: none can exceed its max_tokens = L, so no other mix of lengths gives that total.
    RunPod's sweep prints TTFT, ITL and E2EL and no TPOT; its mean ITL, which pools the gaps, agrees to 1 %. None
    when a condition fails: this is never an estimate."""
    if record.figure("mean_tpot_ms") is not None:
        return None
    e2el, ttft = record.figure("mean_e2el_ms"), record.figure("mean_ttft_ms")
    out_len, completed = record.client.get("random_output_len"), record.figure("completed")
    if e2el is None or ttft is None or not out_len or int(out_len) < 2 or not completed:
        return None
    if float(record.client.get("random_range_ratio", 0.0)) != 0.0:
        return None
    if record.figure("total_output_tokens") != int(completed) * int(out_len):
        return None
    return (float(e2el) - float(ttft)) / (int(out_len) - 1)


def _max_model_len(record: Any, stated: dict[str, Any]) -> int:
    """The record's max_model_len: as stated, else the model's own positions (vLLM's default)."""
    return int(stated.get("max_model_len") or load_model(record.model_name).max_position_embeddings)


def paper_case(record: Any) -> PublishedCase:
    """A paper record as a batch of reasoning requests at t=0 on its stated layout (defaults listed)."""
    dp, tp, pp = record.layout
    stated = record.server.as_dict()
    max_len = _max_model_len(record, stated)
    release_defaults = defaults_of_release(record.vllm_version, record.gpu, max_len)
    defaults = {k: v for k, v in release_defaults.items() if k not in stated}
    flag = {**release_defaults, **stated}
    workload = dict(record.workload)
    n = int(workload.get("num_requests") or 2000)
    lengths_of = output_lengths_of(record.model_name)
    scenario = Scenario(
        model=record.model_name,
        gpu=record.gpu,
        gpus=record.num_gpus,
        dp=dp,
        tp=tp,
        pp=pp,
        gpu_memory_utilization=float(flag["gpu_memory_utilization"]),
        max_num_seqs=int(flag["max_num_seqs"]),
        max_num_batched_tokens=int(flag["max_num_batched_tokens"]),
        block_size=int(flag["block_size"]),
        num_requests=n,
        workload=lengths_of.workload,
    )
    lengths = request_lengths(scenario.workload, n, scenario.seed)
    if pp > 1 and "max_num_batched_tokens" not in stated and record.model_name in PIPELINE_FILLED:
        best, times = tuned_budget(scenario, lengths)
        scenario = replace(scenario, max_num_batched_tokens=best)
        ladder = ", ".join(f"{b}: {t:,.0f} s" for b, t in times.items())
        defaults["max_num_batched_tokens"] = (
            f"{best} (tuned, value unstated: the fastest of {ladder} at the defaults; "
            f"{PIPELINE_FILLED[record.model_name]})"
        )
    return PublishedCase(
        run_id=record.id,
        name=record.title,
        kind="paper",
        source=record.source.reference,
        case=PAPER_CASES.get(record.model_name, record.model_name.rsplit("-", 1)[-1]),
        scenario=scenario,
        device=load_gpu(record.gpu),
        device_key=load_gpu(record.gpu).name,
        lengths=lengths,
        measured=measured_figures(record),
        defaults=defaults,
        output_lengths=lengths_of.source,
        engine="V1",  # §III: "We employ the vLLM v1 inference engine"
    )


def load_records(root: Path = PUBLISHED_DIR, kind: str | None = None) -> list[Any]:
    """Every valid record under ``root`` (of one kind), parsed by the published-format reader."""
    from engine.formats.published import parse_record, published_files

    records = []
    for path in published_files(root) if root.is_dir() else []:
        record = parse_record(path.read_bytes(), str(path))
        if kind is None or str(record.kind) == kind:
            records.append(record)
    return records


# -------------------------------------------------------------------------------------------------- physics bound


def floor_calibration(names: Sequence[str] = tuple(PARAM_BOUNDS)) -> Calibration:
    """The fastest physical step model: every efficiency 1, every cost at its lower bound."""
    values = {n: (PARAM_BOUNDS[n][1] if n.endswith("efficiency") else PARAM_BOUNDS[n][0]) for n in names}
    values.update(layer_overhead_s=0.0, per_seq_layer_overhead_s=0.0, host_contention=0.0)
    values.update(moe_imbalance=1.0)
    return Calibration(**values, source="physical floor: datasheet peaks, no overheads")


def physical_floor(case: PublishedCase, evaluator: Evaluator | None = None) -> dict[str, float | None]:
    """Each figure of the case at the physical floor: no parameter set within bounds predicts it faster."""
    return (evaluator or Evaluator(case)).figures(floor_calibration())  # type: ignore[arg-type]


def reachable(case: PublishedCase, floor: dict[str, float | None]) -> tuple[bool, list[str]]:
    """Whether every published time of the case is at or above its physical floor; the misses as sentences."""
    misses = []
    for key, published in case.measured.items():
        low = floor.get(key)
        if low is not None and published < low:
            misses.append(f"{key} published {published:.4g} s < physical floor {low:.4g} s ({published / low:.2f}×)")
    return not misses, misses


# --------------------------------------------------------------------------------------------------- the paper


def paper_report(records: Sequence[Any] | None = None, max_evals: int = 300) -> dict[str, Any]:
    """The paper's table: each of the four cases predicted by a fit on the other paper records only (plus the §IV
    8B records), its layouts' predicted vs published seconds, and the order of its layouts both ways."""
    records = list(records) if records is not None else load_records(kind="paper")
    cases = [paper_case(r) for r in records]
    evaluators = {c.run_id: Evaluator(c) for c in cases}  # type: ignore[arg-type]
    floors = {c.run_id: physical_floor(c, evaluators[c.run_id]) for c in cases}
    fit_ok = {c.run_id: reachable(c, floors[c.run_id]) for c in cases}
    rows: list[dict[str, Any]] = []
    fits: dict[str, dict[str, Any]] = {}
    for label in [lab for lab in PAPER_CASES.values() if any(c.case == lab for c in cases)]:
        train = [c for c in cases if c.case != label and fit_ok[c.run_id][0]]
        result = fit(train, evaluators=evaluators, label=f"paper fit without {label}", max_evals=max_evals)  # type: ignore[arg-type]
        fits[label] = _fit_summary(result, train, cases[0].device)
        for c in (c for c in cases if c.case == label):
            predicted = evaluators[c.run_id].figures(result.calibration)
            row = _paper_row(c, predicted, floors[c.run_id], fit_ok[c.run_id], result)
            rows.append({**row, "train_cases": fits[label]["train_cases"]})
    usable = [c for c in cases if fit_ok[c.run_id][0]]
    if usable:  # the device's parameters on every usable record (shown, never used to score)
        result = fit(usable, evaluators=evaluators, label="paper fit on every usable record", max_evals=max_evals)  # type: ignore[arg-type]
        fits["all"] = _fit_summary(result, usable, cases[0].device)
    errors = [r["err"] for r in rows if r["err"] is not None]
    from engine.fidelity.report import median_mean_worst

    return {
        "rows": rows,
        "order": _orders(rows),
        "summary": median_mean_worst(errors),
        "fits": fits,
        "output_lengths": {k: vars(v) for k, v in OUTPUT_LENGTHS.items()},
        "defaults": _shared_defaults(cases),
        "source": PAPER_CITATION,
        "not_fitted": {c.run_id: fit_ok[c.run_id][1] for c in cases if not fit_ok[c.run_id][0]},
    }


def _shared_defaults(cases: Sequence[PublishedCase]) -> dict[str, Any]:
    """The defaults every case took alike (the paper's records state some flags and not others; a case's own
    defaults, the budget a PP case was tuned to among them, are in its row)."""
    if not cases:
        return {}
    first = cases[0].defaults
    return {k: v for k, v in first.items() if all(c.defaults.get(k) == v for c in cases[1:])}


def _paper_row(
    c: PublishedCase, predicted: dict[str, Any], floor: dict[str, Any], ok: tuple[bool, list[str]], result: FitResult
) -> dict[str, Any]:
    p, m = predicted.get("completion_s"), c.measured.get("completion_s")
    return {
        "record": c.run_id,
        "case": c.case,
        "model": c.scenario.model,
        "layout": c.layout,
        "published_s": m,
        "predicted_s": p,
        "err": (p - m) / m if (p is not None and m) else None,
        "floor_s": floor.get("completion_s"),
        "reachable": ok[0],
        "why_unreachable": ok[1],
        "train_records": list(result.run_ids),
        "output_lengths": c.output_lengths,
        "defaults": c.defaults,
    }


def _orders(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per case: its layouts fastest first, as published and as predicted, and whether the best one agrees."""
    out = {}
    for label in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == label and r["published_s"] is not None]
        published = [r["layout"] for r in sorted(mine, key=lambda r: r["published_s"])]
        predicted = [r["layout"] for r in sorted(mine, key=lambda r: r["predicted_s"] or math.inf)]
        out[label] = {
            "published": published,
            "predicted": predicted,
            "best_agrees": bool(published) and published[0] == predicted[0],
            "order_agrees": published == predicted,
        }
    return out


def _fit_summary(result: FitResult, train: Sequence[PublishedCase], device: GpuSpec) -> dict[str, Any]:
    return {
        "train_records": list(result.run_ids),
        "train_cases": sorted({c.case for c in train}),
        "parameters": parameter_rows(result, device),
        "warnings": result.warnings(),
        "loss": result.loss,
        # In-sample relative errors of this fit (not a score: the fit saw these records); how close a physical
        # parameter set can come to them at all.
        "in_sample": {
            run_id: {k: math.expm1(v) for k, v in residuals.items()} for run_id, residuals in result.residuals.items()
        },
    }


# --------------------------------------------------------------------------------------------------- bench

# `vllm bench serve`'s defaults for client flags a record leaves unstated (vllm/benchmarks/serve.py, 0.32).
BENCH_CLIENT_DEFAULTS: dict[str, Any] = {
    "num_prompts": 1000,
    "request_rate": "inf",
    "burstiness": 1.0,
    "max_concurrency": None,
    "random_range_ratio": 0.0,
    "random_prefix_len": 0,
    "seed": 0,
}
BENCH_FIGURE_OF = {  # published metric -> the case's measured/predicted key
    "duration_s": "completion_s",
    "output_throughput": "output_throughput",
    "mean_ttft_ms": "ttft_mean_s",
    "mean_tpot_ms": "tpot_mean_s",
}


def served_module() -> Any | None:
    """engine.served (the bench client and API server around the simulator) when present, else None."""
    try:
        from engine import served  # type: ignore[attr-defined]
    except ImportError:
        return None
    return served


class BenchEvaluator:
    """A bench record's figures for any calibration: engine.served's prediction of the served run."""

    def __init__(self, case: PublishedCase, served: Any) -> None:
        self.case, self.served = case, served

    def figures(self, calibration: Calibration) -> dict[str, float | None]:
        c = self.case.meta["client"]
        dataset = self.served.RandomDataset(
            input_len=int(c["random_input_len"]),
            output_len=int(c["random_output_len"]),
            range_ratio=float(c["random_range_ratio"]),
            prefix_len=int(c["random_prefix_len"]),
        )
        cal = Calibration.from_object(calibration)
        frontend = self.served.FrontendCost(
            request_s=cal.api_request_s,
            token_s=cal.api_token_s,
            step_s=cal.api_step_s,
            source=f"API server cost of {cal.source}",
        )
        result = self.served.predict_served(self.case.scenario, dataset, frontend=frontend, calibration=cal)
        return {
            "completion_s": result.duration_s,
            "ttft_mean_s": result.mean_ttft_ms / 1e3,
            "tpot_mean_s": result.mean_tpot_ms / 1e3,
            "output_throughput": result.output_throughput,
        }


def bench_case(record: Any, served: Any) -> PublishedCase:
    """A bench record as a served run: its stated server and client flags, defaults for the rest (listed)."""
    client_stated = record.client.as_dict()
    if client_stated.get("dataset_name", "random") != "random":
        raise ValueError(f"{record.id}: dataset {client_stated.get('dataset_name')!r} is not predicted (random only)")
    for need in ("random_input_len", "random_output_len"):
        if need not in client_stated:
            raise ValueError(f"{record.id}: client.{need} is not stated; the request lengths are unknown")
    client = {**BENCH_CLIENT_DEFAULTS, **client_stated}
    completed = record.figure("completed")
    if "num_prompts" not in client_stated and completed:  # every prompt sent completed: the count is stated
        client["num_prompts"] = int(completed)
    # vLLM's random dataset asks for these lengths; the tokenizer and EOS make the realised ones differ, and the
    # run's own totals state them: the mean prompt and output the bench client reported (when it did).
    for side, total in (("random_input_len", "total_input_tokens"), ("random_output_len", "total_output_tokens")):
        if record.figure(total) and completed:
            client[side] = max(1, round(float(record.figure(total)) / float(completed)))
    stated = record.server.as_dict()
    max_len = _max_model_len(record, stated)
    release_defaults = defaults_of_release(record.vllm_version, record.gpu, max_len)
    v0_rule = _v0_defaults(record, stated)
    release_defaults.update({k: v.value for k, v in v0_rule.items()})
    flag = {**release_defaults, **stated, **{k: v.value for k, v in v0_rule.items() if v.forced}}
    dp, tp, pp = record.layout
    async_on, async_rule = _async_scheduling(record, stated, pp)
    rate = client["request_rate"]
    scenario = Scenario(
        model=record.model_name, gpu=record.gpu, gpus=record.num_gpus, dp=dp, tp=tp, pp=pp,
        gpu_memory_utilization=float(flag["gpu_memory_utilization"]), max_num_seqs=int(flag["max_num_seqs"]),
        max_num_batched_tokens=int(flag["max_num_batched_tokens"]), block_size=int(flag["block_size"]),
        dtype=str(flag["dtype"]), quantization=str(stated.get("quantization") or "none"),
        kv_cache_dtype=str(flag["kv_cache_dtype"]), num_requests=int(client["num_prompts"]),
        max_model_len=int(stated["max_model_len"]) if stated.get("max_model_len") else None,
        workload=f"fixed:{int(client['random_input_len'])},{int(client['random_output_len'])}",
        seed=int(client["seed"]), enable_chunked_prefill=_flag_bool(flag.get("enable_chunked_prefill", True)),
        async_scheduling=async_on, peer_to_peer=not lacks_peer_to_peer(record.source.quote),
    )  # fmt: skip
    scenario = served.scenario_with_client(
        scenario,
        None if str(rate) == "inf" else float(rate),
        float(client["burstiness"]),
        int(client["max_concurrency"]) if client["max_concurrency"] else None,
    )
    measured = measured_figures(record)
    if record.figure("output_throughput") is not None:
        measured["output_throughput"] = float(record.figure("output_throughput"))
    derived = {}
    tpot = derived_mean_tpot_ms(record)
    if tpot is not None:
        measured["tpot_mean_s"] = tpot / 1e3
        derived["mean_tpot_ms"] = (
            f"{tpot:.2f} ms = (mean E2EL {record.figure('mean_e2el_ms')} − mean TTFT {record.figure('mean_ttft_ms')}) "
            f"/ ({record.client.get('random_output_len')} − 1): every request generated "
            f"{record.client.get('random_output_len')} tokens (derived_mean_tpot_ms)"
        )
    defaults = {k: v for k, v in release_defaults.items() if k not in stated}
    defaults.update({k: f"{v.value} ({v.rule})" for k, v in v0_rule.items() if k not in stated or v.forced})
    if "async_scheduling" not in stated:
        defaults["async_scheduling"] = f"{async_on} ({async_rule})"
    defaults.update({f"client.{k}": client[k] for k in BENCH_CLIENT_DEFAULTS if k not in client_stated})
    scenario, defaults = _startable(scenario, defaults, client)
    device = load_gpu(record.gpu)
    return PublishedCase(
        run_id=record.id, name=record.title, kind="bench", source=record.source.reference, case=record.id,
        publisher=getattr(record.source, "publisher", None),
        scenario=scenario, device=device, device_key=device.name, lengths=np.zeros((0, 2), dtype=np.int64),
        measured=measured, defaults=defaults,
        output_lengths=f"random dataset: {client['random_input_len']} in / {client['random_output_len']} out",
        meta={"client": client, "derived": derived}, arrivals_at_start=False,
        engine=engine_generation(record.vllm_version),
    )  # fmt: skip


@dataclass(frozen=True)
class RuleValue:
    """A flag's value as one of vLLM's version rules set it (listed in a record's defaults with the rule)."""

    value: Any
    rule: str
    forced: bool = False  # vLLM overrides even a stated value (MLA turning chunked prefill off in V0)


def _v0_defaults(record: Any, stated: dict[str, Any]) -> dict[str, RuleValue]:
    """A V0 record's scheduler flags by ``engine.vllm_rules.v0_scheduler_flags`` (empty for V1): max_num_seqs,
    the token budget, chunked prefill and prefix caching as the record's release, model and platform set them."""
    from engine.vllm_rules import v0_scheduler_flags

    if engine_generation(record.vllm_version) != "V0":
        return {}
    model = load_model(record.model_name)
    max_len = _max_model_len(record, stated)
    rocm = load_gpu(record.gpu).vendor == "AMD"
    flags = v0_scheduler_flags(record.vllm_version, use_mla=model.is_mla, max_model_len=max_len, rocm=rocm)
    if flags is None:
        return {}
    rule = f"engine.vllm_rules.v0_scheduler_flags, vLLM {record.vllm_version}: {flags.rule}"
    mla = model.is_mla
    return {
        "max_num_seqs": RuleValue(flags.max_num_seqs, rule),
        "max_num_batched_tokens": RuleValue(flags.max_num_batched_tokens, rule),
        "enable_chunked_prefill": RuleValue(flags.enable_chunked_prefill, rule, forced=mla),
        "enable_prefix_caching": RuleValue(flags.enable_prefix_caching, rule, forced=mla),
    }


def _async_scheduling(record: Any, stated: dict[str, Any], pp: int) -> tuple[bool, str]:
    """The record's async scheduling: as stated, else its release's default (a record that states no release
    takes the installed one's, as ``defaults_of_release`` does)."""
    from engine.vllm_rules import async_scheduling_default

    if "async_scheduling" in stated:
        return _flag_bool(stated["async_scheduling"]), "stated"
    return async_scheduling_default(release_of(record.vllm_version), pp)


def _flag_bool(v: Any) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() in {"true", "1", "yes", "on"}


def _startable(scenario: Scenario, defaults: dict[str, Any], client: dict[str, Any]) -> tuple[Scenario, dict]:
    """A record whose server started although the model's own max_model_len would not fit its KV pool (vLLM
    refuses to start then) must have run with a shorter one: the longest the bench needed, said in the defaults.
    The pool does not depend on max_model_len, so this changes feasibility only."""
    from engine.memory import memory_plan_for

    if scenario.max_model_len is not None or memory_plan_for(scenario).feasible:
        return scenario, defaults
    need = int(client["random_input_len"]) + int(client["random_prefix_len"]) + int(client["random_output_len"])
    longest = math.ceil(need * (1 + float(client["random_range_ratio"])))
    shorter = replace(scenario, max_model_len=longest)
    note = f"{longest} (unstated; the model's default does not fit the pool, so the server ran with less)"
    return shorter, {**defaults, "max_model_len": note}


BENCH_MAX_EVALS = 40  # a served bench record costs 0.3–1.8 s per evaluation here: fits on them search less
# ... and move the eight parameters the bench records and the paper's layouts see most: decode bandwidth, prefill
# compute, the host's step and per-sequence costs, the API server's intake per request (very short outputs) and its
# output work per streamed token (a serial queue once the engine streams faster than 1 / api_token_s tokens a
# second: engine.served.frontend_output_lag), the all-reduce's bandwidth (TP=8 records), and what a MoE model's
# expert GEMMs cost beside its dense ones (``moe_imbalance``: the busiest expert's load over the mean, and with it
# whatever makes vLLM's fused MoE kernels slower per FLOP than a dense GEMM; MoE records only, dense fits leave it
# at its default). api_step_s (a fixed delay per chunk, which TPOT cancels) and the rest keep their defaults (listed
# as fixed in each fold's fit).
BENCH_PARAMS = (
    "mem_efficiency", "compute_efficiency", "step_overhead_s", "per_seq_overhead_s", "api_request_s",
    "api_token_s", "link_efficiency", "moe_imbalance",
)  # fmt: skip


def bench_report(
    records: Sequence[Any], max_evals: int = 200, others: Sequence[PublishedCase] = (), jobs: int = 1
) -> dict[str, Any]:
    """Every bench record predicted twice by fits of its device that never saw it: one on the other sources'
    records only (leave-one-source-out), one on the other TP/PP degrees only (its whole degree held out; the
    planner's claims are about layouts). ``others``: more records to train on (the paper's usable ones). Errors per
    record, median/mean/worst per metric and fold kind. A record whose device has no other fold is scored with the
    defaults (datasheet, no fit) and counted as uncalibrated. Without engine.served nothing is predicted. ``jobs``:
    worker processes that predict the records of each fit's trials side by side (the report is the same for any)."""
    from engine.fidelity.calibrate import degree_of, device_kind_pool, pool_key, source_of
    from engine.fidelity.report import median_mean_worst

    bench = [r for r in records if str(r.kind) == "bench"]
    served = served_module()
    if served is None:
        return {"records": len(bench), "scored": 0, "rows": [], "summary": {}, "unscored": [],
                "note": "engine.served (the bench client around the engine) is not present: bench records are "
                        "listed, not predicted"}  # fmt: skip
    cases, unscored, evaluators = _bench_cases(bench, served)
    devices = {c.device_key for c in cases}
    extra = [c for c in others if c.device_key in devices]
    evaluators.update({c.run_id: Evaluator(c) for c in extra})  # type: ignore[arg-type]
    ids = {c.run_id for c in cases}
    evals = min(max_evals, BENCH_MAX_EVALS)
    recipe = partial(bench_evaluators, [r for r in bench if r.id in ids])
    with figure_workers(recipe, {i: evaluators[i] for i in ids}, jobs):
        folds = {
            kind: cross_validate(
                [*cases, *extra],  # type: ignore[arg-type]
                max_evals=evals,
                fold_by=by,
                evaluators=evaluators,
                scored=ids,
                params=BENCH_PARAMS,
                pool_by=(pool_key, device_kind_pool),
            )
            for kind, by in (("source", source_of), ("degree", degree_of))
        }
        _predict_rows(cases, evaluators, folds)
    rows = [_bench_row(c, evaluators[c.run_id], folds) for c in cases]
    summary = {m: median_mean_worst([r[f"err_{m}"] for r in rows]) for m in BENCH_FIGURE_OF}
    per_device = {m: median_mean_worst([r[f"device_err_{m}"] for r in rows]) for m in BENCH_FIGURE_OF}
    per_device_degree = {m: median_mean_worst([r[f"degree_device_err_{m}"] for r in rows]) for m in BENCH_FIGURE_OF}
    fitted = [r for r in rows if r["train_records"]]
    summary_fitted = {m: median_mean_worst([r[f"err_{m}"] for r in fitted]) for m in BENCH_FIGURE_OF}
    # TPOT scored on the records that print it, beside the summary that also scores the derived ones.
    printed_tpot = [r["err_mean_tpot_ms"] for r in rows if "mean_tpot_ms" not in r["derived"]]
    by_degree = {m: median_mean_worst([r[f"degree_err_{m}"] for r in rows]) for m in BENCH_FIGURE_OF}
    degree_fitted = [r for r in rows if r["degree_train_records"]]
    by_degree_fitted = {m: median_mean_worst([r[f"degree_err_{m}"] for r in degree_fitted]) for m in BENCH_FIGURE_OF}
    return {"records": len(bench), "scored": len(rows), "calibrated": len(fitted), "rows": rows,
            "summary": summary, "summary_calibrated": summary_fitted, "unscored": unscored,
            "tpot_derived": sum(1 for r in rows if "mean_tpot_ms" in r["derived"]),
            "summary_tpot_printed": median_mean_worst(printed_tpot),
            "summary_degree_held_out": by_degree, "summary_degree_held_out_calibrated": by_degree_fitted,
            "degree_calibrated": len(degree_fitted), "fold_fits": _fold_fits(cases, folds),
            "pooled": sum(1 for r in rows if r["pool"]), "degree_pooled": sum(1 for r in rows if r["degree_pool"]),
            "summary_per_device_only": per_device, "summary_degree_held_out_per_device_only": per_device_degree,
            "pooling": "every fold is fitted pooled on every device of its kind and vLLM engine generation "
                       "outside the fold (else of its kind, all generations), then the device's own records "
                       "outside the fold refit its memory and compute efficiencies from there; a record whose "
                       "device group has no other source (degree) is scored by the pooled fit alone, and "
                       "summary_per_device_only scores those with the per-device calibration (datasheet defaults) "
                       "instead"}  # fmt: skip


def _fold_fits(cases: Sequence[PublishedCase], folds: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The fits that scored the bench records (one per held-out source or degree): each parameter beside its
    datasheet figure with its uncertainty, the bound warnings, and what it was trained on. (A fit on every record
    of a device, in-sample, costs minutes per device on served records and scores nothing, so it is not run.)"""
    out, seen = [], set()
    for kind, held in folds.items():
        for c in cases:
            h = held[c.run_id]
            key = (kind, h.calibration.source)
            if h.fit is None or key in seen:
                continue
            seen.add(key)
            out.append({"device": c.device_key if h.pool is None else f"pool: {h.pool}", "held_out": kind,
                        "calibration": h.calibration.source,
                        "train_records": len(h.train_run_ids), "parameters": parameter_rows(h.fit, c.device),
                        "warnings": h.fit.warnings()})  # fmt: skip
    return out


class _MemoEvaluator:
    """A bench evaluator that remembers its figures per calibration: folds and the sensitivity check of every fit
    start from the same points, and a served prediction costs up to seconds."""

    def __init__(self, inner: BenchEvaluator) -> None:
        self.inner, self.case, self.memo = inner, inner.case, {}

    def figures(self, calibration: Calibration) -> dict[str, float | None]:
        figures = self.recall(calibration)
        if figures is None:
            figures = self.remember(calibration, self.inner.figures(calibration))
        return figures

    def recall(self, calibration: Calibration) -> dict[str, float | None] | None:
        return self.memo.get(_memo_key(calibration))

    def remember(self, calibration: Calibration, figures: dict[str, float | None]) -> dict[str, float | None]:
        """Figures predicted elsewhere (a worker process, engine.fidelity.workers) for this record."""
        self.memo[_memo_key(calibration)] = figures
        return figures


def _memo_key(calibration: object) -> Calibration:
    """A calibration as a memo key: its values only (two fits that land on the same values share predictions)."""
    return replace(Calibration.from_object(calibration), source="")


def bench_evaluators(records: Sequence[Any]) -> dict[str, _MemoEvaluator]:
    """The evaluators of bench records already known to be predictable (``_bench_cases`` checked them): the recipe
    a worker process builds its own from (engine.fidelity.workers)."""
    served = served_module()
    return {r.id: _MemoEvaluator(BenchEvaluator(bench_case(r, served), served)) for r in records}


def _bench_cases(bench: Sequence[Any], served: Any) -> tuple[list[PublishedCase], list[dict], dict[str, Any]]:
    cases, unscored, evaluators = [], [], {}
    for r in bench:
        try:
            case = bench_case(r, served)
            evaluator = _MemoEvaluator(BenchEvaluator(case, served))
            evaluator.figures(Calibration())  # the engine must be able to predict it at all
        except (ValueError, KeyError) as exc:  # SimulationError and ServedError are ValueErrors
            unscored.append({"record": r.id, "reason": str(exc)})
            continue
        cases.append(case)
        evaluators[case.run_id] = evaluator
    return cases, unscored, evaluators


def _predict_rows(cases: Sequence[PublishedCase], evaluators: dict[str, Any], folds: dict[str, dict[str, Any]]) -> None:
    """Every (record, calibration) pair ``_bench_row`` reads, predicted a calibration at a time (so the records of
    one calibration go to the workers together) into the records' memos."""
    by_calibration: dict[Calibration, dict[str, Any]] = {}
    for c in cases:
        for held in (folds["source"][c.run_id], folds["degree"][c.run_id]):
            for cal in (held.calibration, held.device_calibration):
                if cal is not None:
                    by_calibration.setdefault(_memo_key(cal), {})[c.run_id] = evaluators[c.run_id]
    for cal, evs in by_calibration.items():
        figures_of(list(evs.values()), cal)


def _bench_row(c: PublishedCase, evaluator: Any, folds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    h, d = folds["source"][c.run_id], folds["degree"][c.run_id]
    predicted = evaluator.figures(h.calibration)
    by_degree = evaluator.figures(d.calibration)
    errs = _errors(c, predicted)
    degree_errs = _errors(c, by_degree)
    # The per-device calibration a pooled fit replaced (datasheet defaults): scored beside it.
    device_errs = _errors(c, evaluator.figures(h.device_calibration)) if h.device_calibration else errs
    degree_device_errs = _errors(c, evaluator.figures(d.device_calibration)) if d.device_calibration else degree_errs
    return {"record": c.run_id, "device": c.device_key, "layout": c.layout, "source": c.source,
            "publisher": c.publisher, "model": c.scenario.model, "train_records": len(h.train_run_ids),
            "calibration": h.calibration.source, "pool": h.pool, "defaults": c.defaults,
            "derived": c.meta.get("derived", {}),
            **{f"err_{m}": e for m, e in errs.items()}, "predicted": predicted, "published": c.measured,
            **{f"device_err_{m}": e for m, e in device_errs.items()},
            "degree_train_records": len(d.train_run_ids), "degree_calibration": d.calibration.source,
            "degree_pool": d.pool, **{f"degree_err_{m}": e for m, e in degree_errs.items()},
            **{f"degree_device_err_{m}": e for m, e in degree_device_errs.items()}}  # fmt: skip


def _errors(c: PublishedCase, predicted: dict[str, Any]) -> dict[str, float | None]:
    return {m: _rel(predicted.get(k), c.measured.get(k)) for m, k in BENCH_FIGURE_OF.items()}


def _rel(p: Any, m: Any) -> float | None:
    return (float(p) - float(m)) / float(m) if p is not None and m else None


def device_fits(
    cases: Sequence[PublishedCase], evaluators: dict[str, Any] | None = None, max_evals: int = 400
) -> list[dict[str, Any]]:
    """One fit per device on all of its records: parameters beside the datasheet, with uncertainty."""
    by_device: dict[str, list[PublishedCase]] = {}
    for c in cases:
        by_device.setdefault(c.device_key, []).append(c)
    out = []
    for device, members in sorted(by_device.items()):
        label = f"published records on {device}"
        result = fit(members, evaluators=evaluators, label=label, max_evals=max_evals)  # type: ignore[arg-type]
        out.append({"device": device, **_fit_summary(result, members, members[0].device)})
    return out


def usable_paper_cases(records: Sequence[Any]) -> list[PublishedCase]:
    """The paper's records that a physical fit can use (published times at or above their physical floor)."""
    cases = [paper_case(r) for r in records if str(r.kind) == "paper"]
    return [c for c in cases if reachable(c, physical_floor(c))[0]]


# --------------------------------------------------------------------------------------------------- the report


def records_of(store: Any | None) -> tuple[list[Any], str]:
    """The published records to score: the database's (as imported) when it holds any, else data/published/."""
    from engine.formats.published import record_from_text

    if store is not None:
        frame = store.published_runs()
        if frame.height:
            records = [
                record_from_text(store.published_record(run_id)["record_toml"], f"stored record {run_id}")
                for run_id in frame["run_id"].to_list()
            ]
            return records, f"{len(records)} published record(s) in the database"
    records = load_records()
    return records, f"{len(records)} published record(s) under data/published/"


def records_digest(records: Sequence[Any]) -> str:
    """A hash of the records' ids, figures, flags and quoted lines (a quoted log line can state a runtime fact the
    engine reads, e.g. no GPU peer access): the shipped report is current when this matches."""
    import hashlib
    import json

    body = [
        [r.id, sorted(r.figures), sorted(map(str, r.server.stated)), sorted(map(str, r.client.stated)),
         sorted(map(str, r.workload)), list(r.source.quote)]
        for r in sorted(records, key=lambda r: r.id)
    ]  # fmt: skip
    return hashlib.sha256(json.dumps(body, default=str).encode()).hexdigest()[:16]


def kv_section() -> dict[str, Any]:
    """The start-up logs' KV capacity errors from the memory model's scorer (``engine.fidelity.published_kv``, which
    sizes each log with ``engine.memory``); KV sizing is not done here."""
    from engine.fidelity.published_kv import score_startup_records
    from engine.fidelity.report import median_mean_worst

    scored = score_startup_records()
    rows = [
        {"record": r.id, "figure": r.figure, "published": r.published, "predicted": r.predicted, "err": r.error,
         "within_5pct": r.within, "explanation": r.explanation}
        for r in scored.rows
    ]  # fmt: skip
    return {
        "records": len(rows),
        "rows": rows,
        "summary": median_mean_worst([r["err"] for r in rows]),
        "share_within_5pct": scored.share_within,
        "unexplained_misses": [r.id for r in scored.unexplained_misses],
    }


REPORT_FILE = PUBLISHED_DIR / "fidelity-report.json"


def shipped_report(digest: str, path: Path = REPORT_FILE) -> dict[str, Any] | None:
    """The exported published report (``validate --published --export-published``) when it was computed from
    records with this digest by this engine (``engine_digest``), else None: scoring takes minutes, reading it
    milliseconds."""
    import json

    from engine.fidelity.engine_digest import engine_digest

    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict):
        return None
    current = report.get("records_digest") == digest and report.get("engine_digest") == engine_digest()
    return report if current else None


def current_report(store: Any | None = None) -> dict[str, Any]:
    """The shipped report when it matches the records, else a freshly computed one (it says which)."""
    records, _ = records_of(store)
    shipped = shipped_report(records_digest(records))
    if shipped is not None:
        return {**shipped, "from_file": str(REPORT_FILE)}
    return published_report(store)


def published_report(store: Any | None = None, max_evals: int = 300, jobs: int = 1) -> dict[str, Any]:
    """Published runs beside measured ones: KV per start-up log, bench errors (leave-one-source-out), the paper's
    table (leave-one-case-out); median, mean and worst of each on held-out records only. ``jobs``: worker processes
    for the bench records' predictions (engine.fidelity.workers; the same report for any number)."""
    import datetime as dt

    from engine.fidelity.engine_digest import engine_digest

    records, where = records_of(store)
    return {
        "records": where,
        "records_digest": records_digest(records),
        "engine_digest": engine_digest(),
        "computed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "kv": kv_section(),
        "bench": bench_report(records, max_evals=max_evals, others=usable_paper_cases(records), jobs=jobs),
        "paper": paper_report([r for r in records if str(r.kind) == "paper"], max_evals=max_evals),
    }
