"""``validate`` and ``calibrate``: how far the engine's predictions are from measured runs, and fitting it to them.

``python -m engine validate [--runs ID...] [--db FILE] [--folds K] --json`` prints ``{"runs": [...], "summary":
{...}, "skipped": [...]}``: each run against the prediction made with a calibration fitted without it
(cross-validation), the summary over those held-out runs. ``python -m engine calibrate [--runs ID...] [--db FILE]``
fits one calibration per (device, vLLM version) on all the named runs and stores it; ``--list`` shows stored ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from engine.commands import UsageError, open_cli_store
from engine.store import Store

_DB_HELP = "database file (default: $CLIFFSCOPE_DB or data/cliffscope.duckdb, seeded with the bundled runs)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("validate", help="predicted vs measured for every run, cross-validated")
    p.add_argument("--runs", nargs="+", metavar="ID", help="run ids (default: every run in the database)")
    p.add_argument("--db", metavar="FILE", help=_DB_HELP)
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds per device group (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--published",
        action="store_true",
        help="only the published runs (start-up KV, bench records, the paper's table), held out by source / case, "
        "scored afresh (without it, validate shows data/published/fidelity-report.json while the records match it)",
    )
    which.add_argument("--no-published", action="store_true", help="only the measured runs")
    p.add_argument(
        "--export-published",
        metavar="FILE",
        help="also write the published section as JSON to FILE (data/published/fidelity-report.json is what the "
        "Fidelity page shows while the records are unchanged)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=min(os.cpu_count() or 1, 16),
        help="worker processes that predict the published bench records side by side (default: one per CPU, at "
        "most 16, ~120 MB each; the report is the same for any number, only faster)",
    )
    p.set_defaults(handler=run_validate)

    p = subparsers.add_parser("calibrate", help="fit the step model to measured runs and store the calibration")
    p.add_argument("--runs", nargs="+", metavar="ID", help="run ids (default: every run in the database)")
    p.add_argument("--db", metavar="FILE", help=_DB_HELP)
    p.add_argument("--dry-run", action="store_true", help="fit and print, but do not store")
    p.add_argument("--list", action="store_true", help="list the stored calibrations instead of fitting")
    p.add_argument(
        "--export",
        metavar="FILE",
        help="also write the fits, with the content hash of every run they used, to FILE (data/runs/calibrations.json "
        "is what a new database loads with the bundled runs)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run_calibrate)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def _pct(value: Any) -> str:
    return "—" if value is None else f"{value:+.1%}"


def _check_runs(store: Store, run_ids: list[str] | None) -> None:
    if not run_ids:
        return
    known = set(store.runs()["run_id"].to_list())
    unknown = [r for r in run_ids if r not in known]
    if unknown:
        raise UsageError(f"--runs: {', '.join(unknown)} not in the database; list runs with `python -m engine runs`")


def run_validate(args: argparse.Namespace) -> int:
    from engine.fidelity.report import validate

    if args.folds < 2:
        raise UsageError("--folds must be at least 2 (a run is never scored with a fit that saw it)")
    with open_cli_store(args.db) as store:
        _check_runs(store, args.runs)
        if store.runs().height == 0:
            # A named --db file is not seeded with the bundled runs (only the default database is): say how.
            where = f" --db {args.db}" if args.db else ""
            print(
                f"note: the database holds no measured runs; import the bundled ones with "
                f"`python -m engine import data/runs{where}`",
                file=sys.stderr,
            )
        # Naming runs means those runs: the published section comes with them only when asked for.
        measured = not args.published
        published = args.published or not (args.no_published or args.runs)
        report = validate(store, args.runs, folds=args.folds) if measured else {}
        if published:
            from engine.fidelity.published_fit import current_report, published_report

            # --published scores afresh; otherwise the exported report serves while the records are unchanged.
            report["published"] = published_report(store, jobs=args.jobs) if args.published else current_report(store)
            if args.export_published:
                Path(args.export_published).write_text(
                    json.dumps(_clean(report["published"]), indent=1, sort_keys=True) + "\n"
                )
    if args.json:
        json.dump(_clean(report), sys.stdout)
        sys.stdout.write("\n")
        return 0
    if "runs" in report:
        print(format_report(report))
    if "published" in report:
        from engine.fidelity.published_text import format_published

        print(("\n" if "runs" in report else "") + format_published(report["published"]))
    return 0


def format_report(report: dict[str, Any]) -> str:
    """The report as text: one line per run, then the held-out summary against the targets."""
    lines = [f"{'run':<34} {'regime':<16} {'KV cap':>7} {'cliff':>7} {'compl.':>7} {'TTFT':>7} {'TPOT':>7} {'E2E':>7}"]
    for r in report["runs"]:
        f = r["figures"]
        flag = " over-saturated" if r["over_saturated"] else ""
        lines.append(
            f"{r['run_id'][:34]:<34} {r['regime']:<16} {_pct(f['kv_capacity_tokens']['err']):>7} "
            f"{_pct(f['cliff_onset_s']['err']):>7} {_pct(f['completion_s']['err']):>7} "
            f"{_pct(f['ttft_mean_s']['err']):>7} {_pct(f['tpot_mean_s']['err']):>7} "
            f"{_pct(f['e2e_mean_s']['err']):>7}{flag}"
        )
    s = report["summary"]
    lines.append("")
    mmw = s.get("held_out_runs_mmw") or {}
    if mmw:
        lines.append("held-out runs, |error| median / mean / worst (signed):")
        lines.extend(_mmw_lines(mmw))
    layouts = s.get("held_out_layouts")
    if layouts:
        lines.append(
            f"held-out layouts ({layouts['runs']} runs, each scored by a fit of its host that saw no run of its "
            "layout), |error| median / mean / worst:"
        )
        lines.extend(_mmw_lines(layouts["overall"]))
        for layout, table in layouts["by_layout"].items():
            c = table["completion_s"]
            lines.append(f"    {layout:<14} completion {_mmw(c)}")
    lines.append("")
    lines.append(
        f"held-out runs: {s['held_out_runs']} ({s['calibrated_runs']} scored with a cross-validated fit, "
        f"{s['uncalibrated_runs']} uncalibrated), skipped: {s['skipped_runs']}"
    )
    for key, t in s["targets"].items():
        value = "—" if t["value"] is None else f"{t['value']:.1%}"
        state = {True: "met", False: "MISSED", None: "no data"}[t["met"]]
        lines.append(f"  {key:<24} {value:>8}  limit {t['limit']:.0%}  {state}")
    for key in ("queue_mape", "queue_abs_err_median_s", "first_step_err_median", "step_time_spread"):
        value = s.get(key)
        if value is not None:
            shown = f"{value:.3f} s" if key.endswith("_s") else f"{value:.1%}"
            lines.append(f"  {key:<24} {shown:>8}  (diagnostic, no target)")
    for miss in s["misses"]:
        lines.append(f"  - {miss}")
    for skip in report.get("skipped", []):
        lines.append(f"  skipped {skip['run_id']}: {skip['reason']}")
    return "\n".join(lines)


def _mmw(stats: dict[str, Any]) -> str:
    if not stats or stats.get("median") is None:
        return "—"
    return f"{stats['median']:.1%} / {stats['mean']:.1%} / {stats['worst']:+.1%} (n={stats['n']})"


def _mmw_lines(table: dict[str, dict[str, Any]]) -> list[str]:
    return [f"  {name:<24} {_mmw(stats)}" for name, stats in table.items()]


def run_calibrate(args: argparse.Namespace) -> int:
    from engine.fidelity.calibrate import CalibrationError, fit_groups
    from engine.fidelity.runs import load_cases

    if args.list and args.export:
        raise UsageError("--export writes the fits it makes; it does not go with --list")
    export_path = Path(args.export) if args.export else None
    if export_path is not None and not export_path.parent.is_dir():
        raise UsageError(f"--export: folder {export_path.parent} does not exist; create it or name another file")
    with open_cli_store(args.db) as store:
        if args.list:
            frame = store.calibrations()
            rows = frame.drop("residuals").to_dicts() if frame.height else []
            if args.json:
                json.dump(_clean({"calibrations": rows}), sys.stdout, default=str)
                sys.stdout.write("\n")
            else:
                for row in rows:
                    print(
                        f"{row['calibration_id']}  {row['device_key']}  vLLM {row['vllm_version']}  "
                        f"{row['created_at']}  {row['params']}"
                    )
                if not rows:
                    print("no calibrations stored; fit one with `python -m engine calibrate`")
            return 0
        _check_runs(store, args.runs)
        cases, skipped = load_cases(store, args.runs)
        if not cases:
            reasons = "; ".join(f"{s['run_id']}: {s['reason']}" for s in skipped) or "the database has no runs"
            raise UsageError(f"no run can be fitted ({reasons})")
        try:
            results = fit_groups(cases)
        except CalibrationError as exc:
            raise UsageError(str(exc)) from None
        fitted_groups = {r.group for r in results}
        for c in cases:
            if c.group not in fitted_groups:
                skipped.append(
                    {
                        "run_id": c.run_id,
                        "reason": f"the only run of {c.group[0]} / vLLM {c.group[1]}: "
                        "one run cannot calibrate a hardware group; measure another",
                    }
                )
        out = []
        for result in results:
            record = result.as_record()
            if not args.dry_run:
                record["origin"] = "fitted in this database by `python -m engine calibrate`"
                record["calibration_id"] = store.save_calibration(record)
            out.append(record)
        if args.export:
            about = (
                "Calibrations fitted by `python -m engine calibrate --export`, one per hardware group, on the runs "
                "each names (with the content hash of each as it was ingested); a new database seeded with exactly "
                "these runs loads them (engine.store.Store.open_default), so its first predictions are calibrated."
            )
            exported = {**store.calibration_artefact(out, about), "skipped": skipped}
    if export_path is not None:
        export_path.write_text(json.dumps(_clean(exported), indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(out)} calibration(s) to {export_path}", file=sys.stderr)
    if args.json:
        json.dump(_clean({"calibrations": out, "skipped": skipped}), sys.stdout)
        sys.stdout.write("\n")
        return 0
    for record in out:
        sigma = record.get("uncertainty") or {}
        params = ", ".join(
            f"{k}={v:.4g}" + (f" ×/÷{math.exp(sigma[k]):.2g}" if sigma.get(k) is not None else "")
            for k, v in sorted(record["params"].items())
        )
        print(
            f"{record.get('calibration_id', '(not stored)')}: {record['device_key']} / vLLM "
            f"{record['vllm_version']} on {len(record['run_ids'])} run(s): {params}; "
            f"loss {record['loss_start']:.3g} -> {record['loss']:.3g} (fitted: {', '.join(record['fitted'])})"
        )
        for name, side in sorted((record.get("at_bound") or {}).items()):
            pinned = side == "upper" and "efficiency" in name
            why = " — an efficiency pinned at 1 is a modelling error" if pinned else ""
            print(f"  flagged: {name} at its {side} bound{why}")
    for skip in skipped:
        print(f"skipped {skip['run_id']}: {skip['reason']}")
    return 0
