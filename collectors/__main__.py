"""``python -m collectors``: run sweeps of real vLLM jobs and land one run bundle per job in an inbox.

  python -m collectors run SWEEP.toml|PRESET [--inbox DIR]   run every point not yet complete
  python -m collectors attach --url http://HOST:PORT ...      measure a running vLLM server from outside
  python -m collectors recover INBOX [--force]                turn killed jobs' samples into partial bundles
  python -m collectors presets                                list the presets with their points
  python -m collectors host-profile                           measure this host's memory bandwidth and FLOPS

Exit codes: 0 every point complete (or skipped), 1 some point failed or stopped early, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collectors.recorder import recover
from collectors.spec import SpecError
from collectors.sweep import list_presets, load_sweep, resolve_sweep_path
from engine.objectstore import is_s3_url

DEFAULT_INBOX = Path("data") / "inbox"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise SpecError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m collectors", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a sweep (a TOML file or a preset name)")
    run.add_argument("sweep", help="path to a sweep TOML, or a preset name (see `presets`)")
    run.add_argument(
        "--inbox", default=str(DEFAULT_INBOX), help=f"a directory or s3://bucket/prefix (default {DEFAULT_INBOX})"
    )
    run.add_argument("--dry-run", action="store_true", help="list the points and which are already complete")
    run.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run each point as a Ray task on a cluster: auto, host:6379 or ray://host:10001 (the cluster extra)",
    )
    run.add_argument("--around-knee", action="store_true",
                     help="measure densely around the predicted knee, sparsely elsewhere; stop after sustained "
                     "preemption past it (max_num_seqs sweeps; also `around_knee = true` under [sweep])")  # fmt: skip
    run.add_argument("--no-host-profile", action="store_true", help="skip measuring this host's bandwidth/FLOPS")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--verbose", action="store_true", help="keep vLLM's INFO logs (default: warnings only)")
    run.set_defaults(handler=_cmd_run)
    _add_attach_parser(sub)
    rec = sub.add_parser("recover", help="turn the work dirs of killed jobs into partial bundles")
    rec.add_argument("inbox", help="a directory or s3://bucket/prefix (its local spool is recovered)")
    rec.add_argument("--force", action="store_true", help="also work dirs of other hosts / live pids")
    rec.set_defaults(handler=_cmd_recover)
    pre = sub.add_parser("presets", help="list the presets")
    pre.set_defaults(handler=_cmd_presets)
    prof = sub.add_parser("host-profile", help="measure this host's memory bandwidth and matmul FLOPS (CPU)")
    prof.add_argument("--dtype", default="bfloat16")
    prof.add_argument("--threads", type=int, default=None, help="torch threads (default: the engine's, 1 here)")
    prof.set_defaults(handler=_cmd_host_profile)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from collectors.inbox import open_inbox
    from collectors.progress import SweepProgress
    from collectors.runner import run_sweep

    sweep = load_sweep(resolve_sweep_path(args.sweep))
    inbox = open_inbox(args.inbox)
    if not args.verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if args.around_knee or sweep.around_knee:
        return _run_around_knee(sweep, args)
    if args.dry_run:
        done = inbox.completed_run_ids()
        print(
            f"{sweep.name} ({sweep.experiment}, {sweep.target}): {len(sweep.jobs)} points, "
            f"{len(sweep.engine_groups())} engine start(s)"
        )
        for job in sweep.jobs:
            print(f"  {'done ' if job.run_id in done else 'todo '} {job.run_id}")
        return 0
    profile = None
    if not args.no_host_profile and not args.ray:  # on Ray each job runs on a host the driver cannot profile
        from collectors.host_profile import profile_for_jobs

        profile = profile_for_jobs(sweep.jobs)
    progress = SweepProgress(len(sweep.jobs), enabled=not args.quiet)
    progress.message(f"sweep {sweep.name}: {len(sweep.jobs)} points -> {inbox.display}")
    try:
        if args.ray:
            report = _run_on_ray(sweep, inbox, args.ray, progress)
        else:
            done = inbox.completed_run_ids() if inbox.remote else set()
            publish = inbox.publish if inbox.remote else None
            report = run_sweep(sweep, inbox.local, progress, profile, publish, done)
    finally:
        progress.close()
    failed = report.failed
    progress.message(
        f"sweep {sweep.name}: {len(report.results) - len(failed)} complete, {len(failed)} failed/partial, "
        f"{len(report.skipped)} skipped (already complete)"
    )
    return 1 if failed else 0


def _run_on_ray(sweep: Any, inbox: Any, address: str, progress: Any) -> Any:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise SpecError("--ray needs Ray: pip install 'cliffscope[cluster]'")
    from collectors.ray_runner import run_sweep_on_ray

    return run_sweep_on_ray(sweep, inbox, address, progress)


def _add_attach_parser(sub: Any) -> None:
    att = sub.add_parser(
        "attach",
        help="drive a workload through a running vLLM server's OpenAI API and scrape its /metrics",
        description=(
            "Measure a running vLLM server: the workload's requests go to its /v1/completions (streaming, "
            "ignore_eos, max_tokens = osl), its /metrics is scraped at a fixed interval, and one run bundle lands "
            "in the inbox. What the server does not expose (device, layout, scheduler limits) is asked for here."
        ),
    )
    att.add_argument("--url", required=True, help="the server's base URL, e.g. http://10.0.0.5:8000")
    att.add_argument("--metrics-url", help="its Prometheus metrics (default URL/metrics)")
    att.add_argument("--dcgm-url", help="a DCGM exporter's metrics, e.g. http://10.0.0.5:9400/metrics")
    att.add_argument(
        "--inbox", default=str(DEFAULT_INBOX), help=f"a directory or s3://bucket/prefix (default {DEFAULT_INBOX})"
    )
    att.add_argument("--name", help="run name (default attach-<served model>); a UTC time stamp is appended")
    att.add_argument(
        "--model-config",
        help="the model's config.json: a data/models name or a directory "
        "(default: the server's model root when readable here)",
    )
    att.add_argument(
        "--device", required=True, help="what the server runs on: cpu, or a GPU name from data/gpus.toml (e.g. H100)"
    )
    att.add_argument("--dtype", help="weight dtype (default: the config's torch_dtype)")
    att.add_argument("--tp", type=int, default=1, help="tensor_parallel_size the server runs with (default 1)")
    att.add_argument("--pp", type=int, default=1, help="pipeline_parallel_size (default 1)")
    att.add_argument("--dp", type=int, help="data-parallel engines (default: the engines its /metrics shows)")
    att.add_argument("--max-num-seqs", type=int, required=True, help="the server's --max-num-seqs")
    att.add_argument("--max-num-batched-tokens", type=int, required=True, help="the server's --max-num-batched-tokens")
    att.add_argument("--no-chunked-prefill", action="store_true", help="the server runs without chunked prefill")
    att.add_argument("--workload", default="fixed:64,256", help="engine.workload spec (default fixed:64,256)")
    att.add_argument("--num-requests", type=int, default=64)
    att.add_argument("--seed", type=int, default=0)
    att.add_argument("--arrival-rate", type=float, help="requests/s, Poisson (default: every request at t = 0)")
    att.add_argument("--max-concurrency", type=int, help="client cap on requests in flight (default: none)")
    att.add_argument("--scrape-interval", type=float, default=0.5, help="seconds between /metrics scrapes (0.5)")
    att.add_argument("--request-timeout", type=float, default=600.0, help="longest silence on a stream, s (600)")
    att.add_argument("--retries", type=int, default=3, help="retries before a request's first token (3)")
    att.add_argument("--quiet", action="store_true", help="no progress bar")
    att.set_defaults(handler=_cmd_attach)


def _cmd_attach(args: argparse.Namespace) -> int:
    from collectors.attach_cli import attach_from_args

    return attach_from_args(args)


def _run_around_knee(sweep, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from collectors.knee_sweep import describe_outcome, plan_around_knee, run_around_knee
    from collectors.progress import SweepProgress

    if args.dry_run:  # no host measurement for a dry run: the catalog's cpu-host prices the steps
        print(f"{sweep.name} around the knee: {plan_around_knee(sweep, None).describe()}")
        return 0
    profile = None
    if not args.no_host_profile:
        from collectors.host_profile import profile_for_jobs

        profile = profile_for_jobs(sweep.jobs)
    progress = SweepProgress(len(sweep.jobs), enabled=not args.quiet)
    if is_s3_url(args.inbox):  # the knee loop reads each point's run.json back before choosing the next
        raise SpecError("--around-knee needs a local --inbox directory (it reads each measured point back)")
    out = run_around_knee(sweep, Path(args.inbox), progress, profile)
    ran = len(out.report.results) + len(out.report.skipped)
    progress.message(f"sweep {sweep.name} around the knee: {out.plan.describe()}")
    progress.message(
        f"measured {ran} of the plain grid's {len(out.plan.grid)} points"
        + (f"; stopped after {out.stopped_at} (sustained preemption past the knee)" if out.stopped_at else "")
    )
    for line in describe_outcome(sweep, out, profile):
        progress.message(line)
    return 1 if out.report.failed else 0


def _cmd_recover(args: argparse.Namespace) -> int:
    from collectors.inbox import open_inbox

    inbox = open_inbox(args.inbox)
    if not inbox.local.is_dir():
        raise SpecError(f"inbox {args.inbox} is not a directory")
    bundles = recover(inbox.local, force=args.force)
    for bundle in bundles:
        print(f"partial run recovered: {inbox.publish(bundle, 'partial')}")
    if not bundles:
        print("nothing to recover")
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    for name in list_presets():
        sweep = load_sweep(resolve_sweep_path(name), check_models=False)
        print(f"{name}: {sweep.experiment} · {sweep.target} · {len(sweep.jobs)} points — {sweep.title}")
    return 0


def _cmd_host_profile(args: argparse.Namespace) -> int:
    from collectors.host_profile import measure_host_profile

    print(json.dumps(measure_host_profile(args.dtype, args.threads), indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args) or 0)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
