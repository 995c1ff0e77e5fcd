"""``python -m collectors``: run sweeps of real vLLM jobs and land one run bundle per job in an inbox.

  python -m collectors run SWEEP.toml|PRESET [--inbox DIR]   run every point not yet complete
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

from collectors.recorder import recover
from collectors.spec import SpecError
from collectors.sweep import list_presets, load_sweep, resolve_sweep_path

DEFAULT_INBOX = Path("data") / "inbox"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise SpecError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m collectors", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a sweep (a TOML file or a preset name)")
    run.add_argument("sweep", help="path to a sweep TOML, or a preset name (see `presets`)")
    run.add_argument("--inbox", type=Path, default=DEFAULT_INBOX, help=f"where bundles land (default {DEFAULT_INBOX})")
    run.add_argument("--dry-run", action="store_true", help="list the points and which are already complete")
    run.add_argument("--around-knee", action="store_true",
                     help="measure densely around the predicted knee, sparsely elsewhere; stop after sustained "
                     "preemption past it (max_num_seqs sweeps; also `around_knee = true` under [sweep])")  # fmt: skip
    run.add_argument("--no-host-profile", action="store_true", help="skip measuring this host's bandwidth/FLOPS")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--verbose", action="store_true", help="keep vLLM's INFO logs (default: warnings only)")
    run.set_defaults(handler=_cmd_run)
    rec = sub.add_parser("recover", help="turn the work dirs of killed jobs into partial bundles")
    rec.add_argument("inbox", type=Path)
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
    from collectors.progress import SweepProgress
    from collectors.runner import completed_run_ids, run_sweep

    sweep = load_sweep(resolve_sweep_path(args.sweep))
    if not args.verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if args.around_knee or sweep.around_knee:
        return _run_around_knee(sweep, args)
    if args.dry_run:
        done = completed_run_ids(args.inbox)
        print(
            f"{sweep.name} ({sweep.experiment}, {sweep.target}): {len(sweep.jobs)} points, "
            f"{len(sweep.engine_groups())} engine start(s)"
        )
        for job in sweep.jobs:
            print(f"  {'done ' if job.run_id in done else 'todo '} {job.run_id}")
        return 0
    profile = None
    if not args.no_host_profile:
        from collectors.host_profile import profile_for_jobs

        profile = profile_for_jobs(sweep.jobs)
    progress = SweepProgress(len(sweep.jobs), enabled=not args.quiet)
    progress.message(f"sweep {sweep.name}: {len(sweep.jobs)} points -> {args.inbox}")
    report = run_sweep(sweep, args.inbox, progress, profile)
    failed = report.failed
    progress.message(
        f"sweep {sweep.name}: {len(report.results) - len(failed)} complete, {len(failed)} failed/partial, "
        f"{len(report.skipped)} skipped (already complete)"
    )
    return 1 if failed else 0


def _run_around_knee(sweep, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from collectors.knee_sweep import plan_around_knee, run_around_knee
    from collectors.progress import SweepProgress

    if args.dry_run:  # no host measurement for a dry run: the catalog's cpu-host prices the steps
        print(f"{sweep.name} around the knee: {plan_around_knee(sweep, None).describe()}")
        return 0
    profile = None
    if not args.no_host_profile:
        from collectors.host_profile import profile_for_jobs

        profile = profile_for_jobs(sweep.jobs)
    progress = SweepProgress(len(sweep.jobs), enabled=not args.quiet)
    out = run_around_knee(sweep, args.inbox, progress, profile)
    ran = len(out.report.results) + len(out.report.skipped)
    progress.message(f"sweep {sweep.name} around the knee: {out.plan.describe()}")
    progress.message(
        f"measured {ran} of the plain grid's {len(out.plan.grid)} points; preemptions by max_num_seqs "
        f"{dict(sorted(out.measured.items()))}; measured knee (last without preemption) {out.measured_knee()}, "
        f"predicted {out.plan.predicted_knee}"
        + (f"; stopped after {out.stopped_at} (sustained preemption past the knee)" if out.stopped_at else "")
    )
    return 1 if out.report.failed else 0


def _cmd_recover(args: argparse.Namespace) -> int:
    if not args.inbox.is_dir():
        raise SpecError(f"inbox {args.inbox} is not a directory")
    bundles = recover(args.inbox, force=args.force)
    for bundle in bundles:
        print(f"partial run recovered: {bundle}")
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
