"""The published section of ``python -m engine validate`` as text (the JSON is ``report["published"]``)."""

from __future__ import annotations

from typing import Any


def _pct(value: Any) -> str:
    return "—" if value is None else f"{value:+.1%}"


def _mmw(stats: dict[str, Any] | None) -> str:
    if not stats or stats.get("median") is None:
        return "no held-out data"
    return f"median {stats['median']:.1%}, mean {stats['mean']:.1%}, worst {stats['worst']:+.1%} (n={stats['n']})"


def format_published(pub: dict[str, Any]) -> str:
    """KV, bench and paper sections, each with median / mean / worst over held-out records."""
    where = f"; read from {pub['from_file']}" if pub.get("from_file") else ""
    lines = [f"PUBLISHED RUNS ({pub['records']}; computed {pub['computed_at']}{where})"]
    kv = pub["kv"]
    lines.append(f"KV capacity vs start-up logs: {kv['records']} log(s)")
    lines.append(
        f"  |error| {_mmw(kv.get('summary'))}; within 5 %: {kv['share_within_5pct']:.0%}; unexplained misses: "
        + (", ".join(kv["unexplained_misses"]) or "none")
    )
    for row in kv["rows"]:
        lines.append(f"    {row['record'][:48]:<48} {row['figure']:<22} {_pct(row['err']):>7}  {row['explanation']}")
    lines += _bench_lines(pub["bench"])
    lines += _paper_lines(pub["paper"])
    return "\n".join(lines)


def _bench_lines(bench: dict[str, Any]) -> list[str]:
    lines = [f"Bench records (leave-one-source-out): {bench['scored']} scored of {bench['records']}"]
    if bench.get("note"):
        lines.append(f"  {bench['note']}")
    for row in bench["rows"]:
        lines.append(
            f"  {row['record'][:44]:<44} {row['layout']:<13} duration {_pct(row['err_duration_s']):>7} "
            f"throughput {_pct(row['err_output_throughput']):>7} TTFT {_pct(row['err_mean_ttft_ms']):>7} "
            f"TPOT {_pct(row['err_mean_tpot_ms']):>7}"
            + ("" if row["train_records"] else "  (no other source)")
            + ("  (TPOT derived from E2EL and TTFT)" if "mean_tpot_ms" in row.get("derived", {}) else "")
        )
    used: dict[str, set[str]] = {}
    for row in bench["rows"]:
        for k, v in row["defaults"].items():
            used.setdefault(k, set()).add(str(v))
    if used:
        lines.append("  unstated flags took vLLM's / the bench client's defaults: "
                     + "; ".join(f"{k}={' | '.join(sorted(v))}" for k, v in sorted(used.items())))  # fmt: skip
    for metric, stats in (bench.get("summary") or {}).items():
        lines.append(f"  {metric:<18} {_mmw(stats)}")
    if bench.get("tpot_derived"):
        lines.append(f"  mean_tpot_ms, the {bench['summary_tpot_printed']['n']} records that print it "
                     f"({bench['tpot_derived']} more derive it exactly from mean E2EL and mean TTFT): "
                     f"{_mmw(bench['summary_tpot_printed'])}")  # fmt: skip
    if bench.get("summary_degree_held_out"):
        lines.append(f"  whole TP/PP degree held out ({bench.get('degree_calibrated', 0)} calibrated):")
        for metric, stats in bench["summary_degree_held_out"].items():
            lines.append(f"  {metric:<18} {_mmw(stats)}")
    for within in bench.get("within_source_fits") or []:  # reports exported before the fold fits replaced them
        lines.append(f"  in-sample fit on every {within['device']} bench record (not a score):")
        lines.extend(parameter_lines(within["parameters"]))
        for record, errs in within["in_sample"].items():
            shown = ", ".join(f"{k} {v:+.0%}" for k, v in errs.items())
            lines.append(f"    {record[:44]:<44} {shown}")
    for fold in bench.get("fold_fits") or []:
        lines.append(f"  {fold['calibration']} (scored its {fold['held_out']} fold on {fold['device']}):")
        lines.extend(parameter_lines(fold["parameters"]))
        lines.extend(f"    ! {w}" for w in fold["warnings"])
    for miss in bench.get("unscored") or []:
        lines.append(f"  not scored {miss['record']}: {miss['reason']}")
    return lines


def _paper_lines(paper: dict[str, Any]) -> list[str]:
    lines = [f"Paper table ({paper['source']}): each case predicted by a fit that never saw it"]
    lines.append(f"  {'case':<5} {'layout':<13} {'published':>9} {'predicted':>9} {'error':>7} {'floor':>8}")
    for r in paper["rows"]:
        flag = "" if r["reachable"] else "  below the physical floor: not fitted"
        lines.append(
            f"  {r['case']:<5} {r['layout']:<13} {r['published_s']:>8.0f}s {r['predicted_s']:>8.0f}s "
            f"{_pct(r['err']):>7} {r['floor_s']:>7.0f}s{flag}"
        )
    lines.append(f"  |error| {_mmw(paper['summary'])}")
    for case, order in paper["order"].items():
        state = "best agrees" if order["best_agrees"] else "BEST DIFFERS"
        lines.append(
            f"  {case:<5} published order {' < '.join(order['published'])}; predicted "
            f"{' < '.join(order['predicted'])} ({state})"
        )
    for record, why in paper.get("not_fitted", {}).items():
        lines.append(f"  not fitted {record}: {'; '.join(why)}")
    lines.append("  output lengths per model family:")
    for entry in paper["output_lengths"].values():
        lines.append(f"    {entry['family']}: {entry['source']}")
    lines.append(
        "  unstated flags take vLLM's defaults: " + ", ".join(f"{k}={v}" for k, v in paper["defaults"].items())
    )
    fit_all = paper["fits"].get("all")
    if fit_all:
        lines.append("  parameters fitted on every usable paper record (value ×/÷ uncertainty; datasheet):")
        lines.extend(parameter_lines(fit_all["parameters"]))
        lines.extend(f"    ! {w}" for w in fit_all["warnings"])
    return lines


def parameter_lines(parameters: list[dict[str, Any]]) -> list[str]:
    """Each fitted parameter: value ×/÷ its uncertainty, beside the datasheet peak (efficiencies, as the effective
    figure) or the catalog default it was pulled towards."""
    out = []
    for p in parameters:
        sigma = "" if p["sigma_log"] is None else f" ×/÷{min(2.718281828 ** p['sigma_log'], 1e6):.3g}"
        if p["datasheet"] is not None:
            sheet = f"  = {p['effective']:.3g} of datasheet {p['datasheet_name']} {p['datasheet']:.3g}"
        else:
            sheet = "" if p.get("default") is None else f"  (default {p['default']:.3g})"
        bound = f"  [at {p['at_bound']} bound: flagged]" if p["at_bound"] else ""
        out.append(f"    {p['parameter']:<22} {p['value']:.4g}{sigma}{sheet}{bound}")
    return out
