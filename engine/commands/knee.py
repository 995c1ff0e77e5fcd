"""``knee-fidelity``: the predicted knee against the measured one, per sweep family of measured runs.

``python -m engine knee-fidelity [--db FILE] [--folds K] [--json]`` cross-validates the engine on every run (as
``validate`` does), then compares the knees along each family's swept setting (engine.knee_fidelity) and runs the
engine's own knee search on max_num_seqs families. JSON: ``{"families": [...], "stats": {...}, "searched": [...],
"left_out": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.commands import open_cli_store


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("knee-fidelity", help="predicted vs measured knee per sweep family of measured runs")
    p.add_argument("--db", metavar="FILE", help="database file (default: the seeded default database)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds per device group (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=_knee_fidelity)


def _knee_fidelity(args: argparse.Namespace) -> int:
    from engine.fidelity.report import validate
    from engine.fidelity.runs import load_cases
    from engine.knee_fidelity import family_knees, knee_error_stats, searched_knees

    store = open_cli_store(args.db)
    report = validate(store, folds=args.folds)
    rows = report["runs"]
    metas = {r["run_id"]: store.run_meta(r["run_id"]) or {} for r in rows}
    knees, left_out = family_knees(rows, metas)
    ids = sorted({r for k in knees if k.axis == "max_num_seqs" for r in k.run_ids})
    cases = {c.run_id: c for c in load_cases(store, ids)[0]} if ids else {}
    searched = searched_knees(knees, cases)
    stats = knee_error_stats(knees)
    if args.json:
        out = {"families": [k.as_dict() for k in knees], "stats": stats,
               "searched": [s.as_dict() for s in searched], "left_out": left_out}  # fmt: skip
        json.dump(out, sys.stdout, default=list)
        sys.stdout.write("\n")
        return 0
    print(f"Knee per sweep family (predicted: held-out predictions; {stats['knees']} knees):")
    for k in knees:
        print(f"  {k.family} along {k.axis} {list(k.settings)} — {k.definition}: measured {k.measured}, predicted "
              f"{k.predicted}, {k.steps_off if k.steps_off is not None else '—'} grid step(s) off")  # fmt: skip
    if stats["knees"]:
        print(f"  grid steps off: median {stats['median_steps']}, mean {stats['mean_steps']:.2f}, "
              f"worst {stats['worst_steps']}; exact {stats['exact']}, within one step "
              f"{stats['within_one_step']}")  # fmt: skip
    for s in searched:
        print(f"  engine's knee search on {s.family} ({s.definition}): max_num_seqs {s.searched} (measured grid cell "
              f"{s.measured_setting_below}, measured knee {s.measured}, {s.steps_off} step(s) off; {s.predictions} "
              f"predictions in {s.seconds:.2f} s, calibration: {s.calibration})")  # fmt: skip
    for why in left_out:
        print(f"  left out: {why}")
    return 0
