"""``import`` and ``runs``: the telemetry store from the command line, for when the dashboard is not running.

``python -m engine import PATH... [--db FILE]`` validates and ingests each file (bundle dir or .zip, vLLM bench
JSON, Prometheus text or query_range JSON, CSV/JSONL/Parquet, published records (.toml, or a folder of them such as
data/published/)). Exit 0 when every file landed; 2 with one line per
rejected file (on stderr) otherwise. ``python -m engine runs [--db FILE] --json`` lists the stored runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.bundle import RUN_FIELDS
from engine.commands import UsageError, open_cli_store
from engine.formats.model import ValidationError
from engine.formats.outside import coerce_meta_value
from engine.formats.prometheus_live import LiveQuery, fetch_window, parse_time
from engine.formats.published import published_files
from engine.objectstore import ObjectStoreError, is_s3_url
from engine.store.ingest import IngestReport


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("import", help="ingest run files into the store (validated, all-or-nothing per file)")
    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="bundle directory or .zip, a folder of bundles, a vllm bench sweep folder, or an outside-format file "
        "(also .gz/.zst/.zip)",
    )
    live = p.add_argument_group("a live Prometheus (one server's vLLM and DCGM series over a window, as one run)")
    live.add_argument("--prometheus", metavar="URL", help="the Prometheus server's base URL, e.g. http://host:9090")
    live.add_argument("--start", metavar="T0", help="window start: RFC 3339 (2026-12-02T12:00:00Z) or unix seconds")
    live.add_argument("--end", metavar="T1", help="window end, as --start")
    live.add_argument(
        "--selector",
        default="",
        metavar="MATCHERS",
        help='label matchers picking the vLLM server\'s series, e.g. instance="10.0.0.5:8000"',
    )
    live.add_argument(
        "--dcgm-selector",
        default="",
        metavar="MATCHERS",
        help='label matchers picking its node\'s DCGM series, e.g. Hostname="node-1"',
    )
    live.add_argument("--step", type=float, default=None, metavar="S", help="query step (default window/10,000, ≥1 s)")
    p.add_argument(
        "--inbox",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="also ingest every complete bundle in DIR or the bucket prefix (moved to done/ or rejected/)",
    )
    p.add_argument("--db", metavar="FILE", help="database file (default: $CLIFFSCOPE_DB or data/cliffscope.duckdb)")
    p.add_argument("--replace", action="store_true", help="replace a stored run of the same id whose content differs")
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a run field the file lacks (e.g. device='NVIDIA H200', tp=2, max_num_seqs=256); repeatable",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run_import)

    p = subparsers.add_parser("runs", help="list the runs in the store")
    p.add_argument("--db", metavar="FILE", help="database file (default: $CLIFFSCOPE_DB or data/cliffscope.duckdb)")
    for flag in ("model", "device", "layout", "source", "status"):
        p.add_argument(f"--{flag}", default=None, help=f"only runs with this {flag}")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run_runs)


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in RUN_FIELDS:
            raise UsageError(
                f"--meta {pair!r}: write KEY=VALUE with KEY one of the run fields ({', '.join(RUN_FIELDS)})"
            )
        try:
            out[key] = coerce_meta_value(key, value)
        except ValueError as exc:
            raise UsageError(f"--meta {exc}") from None
    return out


def run_import(args: argparse.Namespace) -> int:
    if not args.paths and not args.inbox and not args.prometheus:
        raise UsageError("import: give at least one PATH (or --inbox DIR, or --prometheus URL --start T0 --end T1)")
    overrides = _overrides(args.meta)
    live = _live_query(args)
    with open_cli_store(args.db) as store:
        paths = [item for path in args.paths for item in _expand(Path(path))]
        reports = [store.try_ingest(path, overrides=overrides or None, replace=args.replace) for path in paths]
        if live is not None:
            reports.append(_import_live(store, live, overrides, args.replace))
        if args.inbox:
            try:
                reports += store.ingest_inbox(args.inbox if is_s3_url(args.inbox) else Path(args.inbox))
            except ObjectStoreError as exc:
                raise UsageError(str(exc)) from None
    rejected = [r for r in reports if not r.ok]
    if args.json:
        print(
            json.dumps(
                {
                    "landed": [
                        {
                            "file": r.file,
                            "runs": [{"run_id": o.run_id, "action": o.action, "rows": o.rows} for o in r.runs],
                        }
                        for r in reports
                        if r.ok
                    ],
                    "rejected": [{"file": r.file, "error": str(r.error)} for r in rejected],
                }
            )
        )
    else:
        for report in reports:
            if report.ok:
                print(report.summary())
    for report in rejected:
        print(f"rejected: {report.error}", file=sys.stderr)
    return 2 if rejected else 0


def _live_query(args: argparse.Namespace) -> LiveQuery | None:
    if not args.prometheus:
        if args.start or args.end or args.selector or args.dcgm_selector:
            raise UsageError("--start/--end/--selector go with --prometheus URL")
        return None
    if not args.start or not args.end:
        raise UsageError("--prometheus needs --start T0 and --end T1 (RFC 3339 or unix seconds)")
    try:
        return LiveQuery(
            url=args.prometheus, start=parse_time(args.start, "--start"), end=parse_time(args.end, "--end"),
            selector=args.selector, dcgm_selector=args.dcgm_selector, step_s=args.step,
        )  # fmt: skip
    except ValidationError as exc:
        raise UsageError(str(exc)) from None


def _import_live(store: Any, query: LiveQuery, overrides: dict[str, Any], replace: bool) -> IngestReport:
    """Fetch the window and ingest it like an uploaded query_range export: validated whole, then one transaction."""
    try:
        data = fetch_window(query)
        return store.ingest_bytes(data, query.display, overrides=overrides or None, replace=replace)
    except ValidationError as exc:
        return IngestReport(file=query.display, error=exc)


def _expand(path: Path) -> list[Path]:
    """A folder of bundles (e.g. data/runs) stands for the bundles in it, a folder of published records (e.g.
    data/published, any depth) for its ``.toml`` files; anything else is itself."""
    if path.is_dir() and not (path / "run.json").is_file():
        children = [
            child
            for child in sorted(path.iterdir())
            if not child.name.startswith(".") and ((child / "run.json").is_file() or child.suffix.lower() == ".zip")
        ]
        children += published_files(path)
        if children:
            return children
    return [path]


RUN_COLUMNS = (
    "run_id",
    "name",
    "source",
    "status",
    "model_name",
    "device",
    "layout",
    "engine_samples_rows",
    "requests_rows",
    "gpu_samples_rows",
    "source_ref",  # a published run's source address or citation (empty for measured and uploaded runs)
)


def run_runs(args: argparse.Namespace) -> int:
    with open_cli_store(args.db) as store:
        try:
            frame = store.runs(
                model=args.model, device=args.device, layout=args.layout, source=args.source, status=args.status
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    rows = frame.select(RUN_COLUMNS).to_dicts()
    if args.json:
        print(json.dumps({"runs": rows}))
        return 0
    if not rows:
        print("no runs")
        return 0
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in RUN_COLUMNS}
    print("  ".join(c.ljust(widths[c]) for c in RUN_COLUMNS).rstrip())
    for row in rows:
        print("  ".join(("" if row[c] is None else str(row[c])).ljust(widths[c]) for c in RUN_COLUMNS).rstrip())
    return 0
