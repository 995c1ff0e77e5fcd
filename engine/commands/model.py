"""``kv``, ``predict`` and ``plan``: the analytical engine from the command line (``--json`` for one JSON object)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from engine.catalog import CatalogError
from engine.commands import UsageError
from engine.scenario import DEFAULT, Scenario, ScenarioError, validate_scenario

_HELP = {
    "model": "catalog name (e.g. DeepSeek-R1-Distill-Qwen-32B, 32B) or a path to any config.json",
    "gpu": "catalog device (H100, H200, B200, A100-80GB, L40S, MI300X, cpu-host)",
    "gpu_mem_gib": "a custom device by its memory in GiB (bandwidth/FLOPS from --gpu)",
    "gpus": "GPU budget (plan) / dp×tp×pp (kv, predict)",
    "max_model_len": "default: the model's max_position_embeddings",
    "workload": "reasoning | reasoning:SCALE | fixed:ISL,OSL | lognormal:ISL_MED,ISL_SIGMA,OSL_MED,OSL_SIGMA | FILE",
    "kv_cache_memory_bytes": "fixed KV pool per device (as vLLM's flag and the CPU backend)",
    "arrival_rate": "requests/s, evenly spaced (default: all arrive at t=0, as in the paper)",
    "request_rate": "vllm bench serve --request-rate: gamma/Poisson arrivals, requests/s (inf: all at t=0)",
    "burstiness": "vllm bench serve --burstiness: the gamma shape of the inter-arrival times (1: Poisson)",
    "max_concurrency": "vllm bench serve --max-concurrency: a closed loop of this many client slots",
    "enable_chunked_prefill": "false: vLLM V0's scheduler without chunked prefill (whole prompts, prefill-only steps)",
    "async_scheduling": "true: vLLM's async scheduling (host work overlaps the GPU step; vLLM's default from 0.14)",
    "peer_to_peer": "false: the GPUs have no peer access (a pod or VM hides it): TP/PP collectives cross PCIe",
}


def _add_scenario_flags(p: argparse.ArgumentParser) -> None:
    for f in fields(Scenario):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(DEFAULT, f.name)
        p.add_argument(
            flag,
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=f"{_HELP.get(f.name, '')} (default: {default})".strip(),
        )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _scenario(args: argparse.Namespace) -> Scenario:

    values: dict[str, Any] = {}
    for f in fields(Scenario):
        raw = getattr(args, f.name)
        if raw is None:
            continue
        values[f.name] = raw
    if values.get("gpu_mem_gib") is not None and "gpu" not in values:
        values["gpu"] = "custom"
    try:
        base = Scenario(**{**{f.name: getattr(DEFAULT, f.name) for f in fields(Scenario)}, **values})
        s = validate_scenario(base)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    return s


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def _emit(obj: dict[str, Any], as_json: bool, human: str) -> None:
    try:
        if as_json:
            json.dump(_clean(obj), sys.stdout)
            sys.stdout.write("\n")
        else:
            print(human)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _gib(x: float) -> str:
    return f"{x / 1024**3:,.2f} GiB"


def _kv_published(args: argparse.Namespace) -> int:
    from engine.fidelity.published_kv import score_startup_records

    try:
        summary = score_startup_records()
    except CatalogError as exc:
        raise UsageError(str(exc)) from None
    rows = [
        {
            "id": r.id,
            "figure": r.figure,
            "published": r.published,
            "predicted": r.predicted,
            "error": r.error,
            "within_5pct": r.within,
            "vllm_version": r.vllm_version,
            "version_assumed": r.version_assumed,
            "note": r.note,
            "explanation": r.explanation,
        }
        for r in summary.rows
    ]
    misses = [r for r in summary.rows if not r.within]
    out = {
        "source": "predicted: engine.memory vs published start-up logs (data/published/startup)",
        "rows": rows,
        "median_abs_error": summary.median_abs_error,
        "mean_abs_error": summary.mean_abs_error,
        "worst": {"id": summary.worst.id, "error": summary.worst.error},
        "share_within_5pct": summary.share_within,
        "held_out": None
        if summary.held_out is None
        else {
            "n": len(summary.held_out.rows),
            "median_abs_error": summary.held_out.median_abs_error,
            "mean_abs_error": summary.held_out.mean_abs_error,
            "worst": {"id": summary.held_out.worst.id, "error": summary.held_out.worst.error},
            "share_within_5pct": summary.held_out.share_within,
        },
        "misses": len(misses),
        "unexplained_misses": [r.id for r in summary.unexplained_misses],
    }
    lines = [f"{'record':46s} {'figure':24s} {'published':>12s} {'predicted':>12s} {'error':>8s}"]
    for r in summary.rows:
        lines.append(
            f"{r.id:46s} {r.figure:24s} {r.published:12,.2f} {r.predicted:12,.2f} {r.error * 100:+7.1f}%"
            + (f"  ({r.note})" if r.note else "")
        )
        if not r.within:
            lines.append(f"{'':4s}miss: {r.explanation or 'UNEXPLAINED'}")
    lines.append(
        f"median |error| {summary.median_abs_error * 100:.1f}%  mean {summary.mean_abs_error * 100:.1f}%  "
        f"worst {summary.worst.error * 100:+.1f}% ({summary.worst.id})  within 5%: "
        f"{summary.share_within * 100:.0f}% of {len(summary.rows)}; misses explained: "
        f"{len(misses) - len(summary.unexplained_misses)} of {len(misses)}"
    )
    h = summary.held_out
    if h is not None:
        lines.append(
            f"held out (records that set no constant of engine/vllm_rules.py): median |error| "
            f"{h.median_abs_error * 100:.1f}%  mean {h.mean_abs_error * 100:.1f}%  worst {h.worst.error * 100:+.1f}% "
            f"({h.worst.id})  within 5%: {h.share_within * 100:.0f}% of {len(h.rows)}"
        )
    _emit(out, args.json, "\n".join(lines))
    return 0


def _kv(args: argparse.Namespace) -> int:
    from engine.memory import memory_plan_for

    if args.published:
        return _kv_published(args)
    s = _scenario(args)
    try:
        plan = memory_plan_for(s)
    except CatalogError as exc:
        raise UsageError(str(exc)) from None
    out = plan.as_dict()
    out["source"] = "predicted: engine.memory (vLLM v1 sizing rule)"
    out["startup_log"] = plan.startup_lines()
    lines = [
        f"{plan.model} on {plan.gpu}, dp={plan.dp} tp={plan.tp} pp={plan.pp} ({plan.weight_dtype} weights)",
        f"  KV per token (whole model):  {plan.kv_bytes_per_token:,} bytes",
        f"  KV per token per device:     {plan.kv_bytes_per_token_per_device:,} bytes",
        f"  weights per device:          {_gib(plan.weights_bytes_per_device)}",
        f"  activation peak (profiling): {_gib(plan.activation_bytes_per_device)}",
        f"  memory for KV per device:    {_gib(plan.free_bytes_per_device)}",
        f"  KV cache: {plan.kv_blocks:,} blocks = {plan.kv_capacity_tokens:,} tokens per replica",
        f"  max concurrency at {plan.max_model_len:,} tokens: {plan.max_concurrency:.2f}x",
        f"  as vLLM {plan.vllm_version} logs it (max_num_seqs {plan.max_num_seqs}, "
        f"max_num_batched_tokens {plan.max_num_batched_tokens}, block {plan.block_size}):",
        *[f"    {line}" for line in plan.startup_lines()],
        f"  feasible: {plan.feasible}" + (f" — {plan.reason}" if plan.reason else ""),
        *[f"  note: {n}" for n in plan.notes],
    ]
    _emit(out, args.json, "\n".join(lines))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from engine.served import bench_result, default_frontend
    from engine.simulate import SimulationError, predict

    s = _scenario(args)
    served = s.request_rate is not None or s.max_concurrency is not None
    frontend = default_frontend(s.gpu) if served else None
    timeline_path = Path(args.timeline) if args.timeline else None
    if timeline_path is not None and timeline_path.suffix != ".parquet":
        raise UsageError(f"timeline: {args.timeline!r} must end in .parquet")
    try:
        pred = predict(s, frontend=frontend)
    except (SimulationError, CatalogError) as exc:
        raise UsageError(f"predict: {exc}") from None
    if timeline_path is not None:
        tmp = timeline_path.with_suffix(".parquet.tmp")
        pred.timeline.write_parquet(tmp)
        tmp.replace(timeline_path)
    sm = pred.summary.as_dict()
    sm["source"] = "predicted: engine.simulate"
    cliff = "none" if sm["cliff_onset_s"] is None else f"{sm['cliff_onset_s']:,.1f} s"
    lines = [
        f"{sm['model']} on {s.gpus}×{pred.memory.gpu} dp={s.dp} tp={s.tp} pp={s.pp}, {sm['num_requests']:,} "
        f"requests ({s.workload}, seed {s.seed})",
        f"  completion: {sm['completion_s']:,.1f} s   generation: {sm['generation_tokens_per_s']:,.0f} tokens/s",
        f"  cliff onset: {cliff}   preemptions: {sm['preemptions']:,}   peak running: {sm['peak_running']:,}",
        f"  TTFT mean {sm['ttft_mean_s']:.2f} s  TPOT mean {sm['tpot_mean_s'] * 1000:.1f} ms  "
        f"E2E mean {sm['e2e_mean_s']:,.1f} s  p99 {sm['e2e_p99_s']:,.1f} s",
        f"  regime: {sm['bound_regime']}",
    ]
    if frontend is not None:
        bench = bench_result(pred, frontend)
        sm["bench"] = {**asdict(bench), "source": "predicted: engine.served (vllm bench serve's metrics)"}
        lines += _bench_lines(bench)
    if timeline_path is not None:
        lines.append(f"  timeline: {timeline_path} ({pred.timeline.height} rows)")
    _emit(sm, args.json, "\n".join(lines))
    return 0


def _bench_lines(b: Any) -> list[str]:
    """A served prediction as `vllm bench serve` prints its result."""
    return [
        "  as vllm bench serve reports it (predicted):",
        f"    duration {b.duration_s:,.2f} s   completed {b.completed:,}   requests/s {b.request_throughput:,.2f}   "
        f"output tokens/s {b.output_throughput:,.1f}   total tokens/s {b.total_token_throughput:,.1f}",
        f"    TTFT ms mean {b.mean_ttft_ms:,.1f} median {b.median_ttft_ms:,.1f} p99 {b.p99_ttft_ms:,.1f}   "
        f"TPOT ms mean {b.mean_tpot_ms:,.2f} median {b.median_tpot_ms:,.2f} p99 {b.p99_tpot_ms:,.2f}",
        f"    ITL ms mean {b.mean_itl_ms:,.2f} median {b.median_itl_ms:,.2f} p99 {b.p99_itl_ms:,.2f}   "
        f"frontend busy {b.frontend_utilization:.0%}",
        *[f"    note: {n}" for n in b.notes],
    ]


def _plan(args: argparse.Namespace) -> int:
    from engine.catalog import load_model
    from engine.planner import plan

    s = _scenario(args)
    if args.tune:
        return _plan_tuned(args, s)
    layouts = plan(s)
    model_name = load_model(s.model).name
    out = {
        "model": model_name,
        "gpu": s.gpu,
        "gpus": s.gpus,
        "num_requests": s.num_requests,
        "workload": s.workload,
        "source": "predicted: engine.planner",
        "layouts": [r.as_dict() for r in layouts],
    }
    lines = [f"{model_name} on {s.gpus}×{s.gpu}, {s.num_requests:,} requests ({s.workload}); best first:"]
    for i, r in enumerate(layouts, 1):
        time_text = f"{r.completion_s:8,.0f} s" if r.completion_s is not None else "       — "
        lines.append(f"  {i:2d}. DP={r.dp} TP={r.tp} PP={r.pp}  {time_text}  {r.reason}")
    _emit(out, args.json, "\n".join(lines))
    return 0


def _tune_options(args: argparse.Namespace) -> tuple[Any, Any, Any, tuple[str, ...]]:
    from engine.knee import TUNABLE, Objective, parse_cliff, parse_slo

    try:
        slo, cliff = parse_slo(args.slo), parse_cliff(args.cliff)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    also = tuple(t.strip() for t in (args.tune_also or "").split(",") if t.strip())
    bad = [t for t in also if t not in TUNABLE[1:]]
    if bad:
        raise UsageError(f"tune-also: {', '.join(bad)} — choose among {', '.join(TUNABLE[1:])}")
    return slo, cliff, Objective(args.objective), ("max_num_seqs", *also)


def _kernel_cached() -> bool:
    """Whether numba's on-disk cache holds the compiled window loop (an index file beside the module, or under
    NUMBA_CACHE_DIR): then loading it costs ~1 s rather than the 11-26 s of a compile."""
    import engine

    roots = [Path(engine.__file__).parent / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        roots.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    return any(any(root.rglob("window_kernel.window_loop-*.nbi")) for root in roots if root.is_dir())


def _plan_tuned(args: argparse.Namespace, s: Scenario) -> int:
    """``plan --tune``: every layout at its own knee, a few dozen predictions. They use the simulator's compiled
    loop: loaded first when numba's cache has it (~1 s, then each prediction is ~5× faster), else compiled in the
    background while the Python loop predicts (see engine.window_jit)."""
    import time

    from engine import window_jit
    from engine.catalog import load_model
    from engine.planner import plan_tuned

    slo, cliff, objective, tune = _tune_options(args)
    t0 = time.perf_counter()
    if _kernel_cached():
        window_jit.load()
    else:
        window_jit.start_background_load()
    layouts = plan_tuned(s, slo=slo, cliff=cliff, objective=objective, tune=tune)
    took = time.perf_counter() - t0
    model_name = load_model(s.model).name
    predictions = sum(r.knee.predictions for r in layouts if r.knee)
    cal = next((r.knee.calibration for r in layouts if r.knee), "defaults")
    out = {
        "model": model_name, "gpu": s.gpu, "gpus": s.gpus, "num_requests": s.num_requests, "workload": s.workload,
        "objective": objective.value, "slo": {"ttft_p99_s": slo.ttft_p99_s, "tpot_mean_s": slo.tpot_mean_s,
        "e2e_p99_s": slo.e2e_p99_s}, "cliff_limit": cliff.max_preempting_share, "tuned": list(tune),
        "current_max_num_seqs": s.max_num_seqs, "predictions": predictions, "seconds": took, "calibration": cal,
        "source": "predicted: engine.planner.plan_tuned (engine.knee)", "layouts": [r.as_dict() for r in layouts],
    }  # fmt: skip
    lines = [
        f"{model_name} on {s.gpus}×{s.gpu}, {s.num_requests:,} requests ({s.workload}); each layout at its own knee "
        f"(objective: {objective.value}; cliff limit: {cliff.describe()}; SLO: {slo.describe()}), best first:"
    ]
    for i, r in enumerate(layouts, 1):
        k = r.knee
        if not r.feasible or k is None:
            lines.append(f"  {i:2d}. DP={r.dp} TP={r.tp} PP={r.pp}  {'—':>22}  {r.reason}")
            continue
        gain = f"{k.gain:+.1%}" if k.gain is not None else "—"
        yours = f"{k.current.completion_s:,.0f} s" if k.current.completion_s is not None else "cannot run"
        lines.append(
            f"  {i:2d}. DP={r.dp} TP={r.tp} PP={r.pp}  max_num_seqs {k.recommended.max_num_seqs:>6,}  "
            f"{k.best.completion_s:8,.0f} s (yours {s.max_num_seqs:,}: {yours}, gain {gain})  [{k.bound.value}] {k.why}"
        )
    lines.append(f"  {predictions} predictions in {took:.1f} s; all figures predicted (calibration: {cal})")
    _emit(out, args.json, "\n".join(lines))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    kv = subparsers.add_parser("kv", help="KV bytes per token, weights per device, KV capacity as vLLM counts it")
    _add_scenario_flags(kv)
    kv.add_argument("--published", action="store_true", help="score the KV sizing against every published start-up log")
    kv.set_defaults(handler=_kv)
    pr = subparsers.add_parser("predict", help="simulate a batch: completion, cliff onset, latencies")
    _add_scenario_flags(pr)
    pr.add_argument("--timeline", metavar="FILE.parquet", help="also write the predicted timeline")
    pr.set_defaults(handler=_predict)
    pl_ = subparsers.add_parser("plan", help="rank every DP×TP×PP layout of --gpus devices")
    _add_scenario_flags(pl_)
    pl_.add_argument("--tune", action="store_true", help="rank each layout at its own knee (engine.knee)")
    pl_.add_argument("--slo", metavar="ttft_p99=2s,tpot=50ms,e2e_p99=900s", help="latency limits for --tune")
    pl_.add_argument("--cliff", metavar="none|no-preemption|5%%", help="cliff limit for --tune (default none)")
    pl_.add_argument("--objective", choices=["completion", "throughput"], default="completion",
                     help="what --tune optimises (default completion)")  # fmt: skip
    pl_.add_argument("--tune-also", metavar="max_num_batched_tokens,gpu_memory_utilization",
                     help="with --tune, also search these settings")  # fmt: skip
    pl_.set_defaults(handler=_plan)
