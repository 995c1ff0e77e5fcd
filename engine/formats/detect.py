"""Pick the reader for an input by its content: a bundle directory, a zip, Parquet, JSON or text.

The file name is used only for messages (and, for plain tables, as the run's default display name); it never
decides where anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.formats import bundles, compressed, guidellm, plain, prometheus, published, vllm_bench, vllm_sweep
from engine.formats.model import Limits, ParsedRun, ValidationError


def read_path(
    path: Path, limits: Limits, *, display: str | None = None, overrides: Mapping[str, Any] | None = None
) -> list[ParsedRun]:
    """Read every run in ``path``. ``overrides`` set run fields an outside format lacks (e.g. the device an upload
    page asked for); for bundles they only fill fields that are null. Raises ValidationError."""
    display = display or path.name
    if path.is_dir():
        if bundles.is_bundle_dir(path):
            runs = [bundles.read_bundle_dir(path, limits, display)]
        elif members := vllm_sweep.folder_members(path, limits, display):
            runs = vllm_sweep.read_sweep(members, display)
        else:
            raise ValidationError.one(
                display,
                "a directory without run.json or vllm bench sweep results (run=N.json)",
                "point at a run bundle directory, a vllm bench sweep output folder, or at the files inside it",
            )
    else:
        if not path.is_file():
            raise ValidationError.one(display, "no such file", "check the path")
        size = path.stat().st_size
        if size > limits.max_file_bytes:
            raise ValidationError.one(
                display,
                f"{size:,} bytes is over the {limits.max_file_bytes:,}-byte limit",
                "split the file, or raise the store's max_file_bytes limit",
            )
        runs = read_bytes(path.read_bytes(), display, limits, suffix=path.suffix.lower())
    if len(runs) > limits.max_runs_per_file:
        raise ValidationError.one(
            display,
            f"{len(runs)} runs in one file (limit {limits.max_runs_per_file})",
            "split the file, or raise the store's max_runs_per_file limit",
        )
    if overrides and any(run.published is not None for run in runs):
        raise ValidationError.one(
            display,
            "a published record states its own fields; --meta/overrides cannot change them",
            "edit the record's TOML (and its quote lines) instead",
        )
    if overrides:
        for run in runs:
            for key, value in overrides.items():
                # A bundle's own fields are the collector's record: overrides only fill its gaps.
                if value is None or (run.strict and run.meta.get(key) is not None):
                    continue
                run.meta[key] = value
                if key in run.missing:
                    run.missing.remove(key)
    return runs


def read_bytes(
    data: bytes, display: str, limits: Limits, *, suffix: str = "", unpacked: bool = False
) -> list[ParsedRun]:
    """Read runs from an in-memory file (an upload). ``suffix`` only breaks ties (``.jsonl`` vs one JSON object);
    ``unpacked`` marks bytes that came out of an archive, which may not be an archive again."""
    if len(data) > limits.max_file_bytes:
        raise ValidationError.one(
            display, f"{len(data):,} bytes is over the {limits.max_file_bytes:,}-byte limit", "split the file"
        )
    kind = compressed.kind_of(data)
    if kind is not None:
        if unpacked:
            raise ValidationError.one(
                display, f"a {kind} archive inside an archive", "compress the file once (one .gz, .zst or .zip)"
            )
        return _read_archive(data, kind, display, limits)
    if data.startswith(b"PAR1"):
        return _plain(plain.read_parquet(data, display, limits), "parquet", data, display)
    if not data.strip():
        raise ValidationError.one(display, "the file is empty", "upload the file with its contents")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError.one(
            display,
            f"not UTF-8 text (byte {exc.start}), and not Parquet, gzip, zstandard or zip",
            "save text files as UTF-8; see docs/formats.md for the accepted formats",
        ) from None
    if "\0" in text:
        raise ValidationError.one(display, "text with NUL characters", "upload the file as written by its tool")
    if published.looks_like_published(text, suffix):
        return published.read_published(data, display)
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        if len(data) > limits.max_json_bytes:
            raise ValidationError.one(
                display, f"JSON over the {limits.max_json_bytes:,}-byte limit", "use Parquet or CSV for large tables"
            )
        return _read_json(stripped, data, display, limits, suffix)
    if suffix in (".yaml", ".yml"):
        return _read_yaml(text, data, display, limits)
    if prometheus.looks_like_exposition(text):
        samples = prometheus.parse_text(text, display)
        return prometheus.build_runs(samples, data, display, prometheus.TEXT_ORIGIN, limits)
    if suffix in (".csv", ".txt", "") or "," in text.split("\n", 1)[0]:
        return _plain(plain.read_csv(data, display, limits), "csv", data, display)
    raise ValidationError.one(
        display, "not a format cliffscope reads", "see docs/formats.md for every accepted format and its columns"
    )


def _read_archive(data: bytes, kind: str, display: str, limits: Limits) -> list[ParsedRun]:
    """A .gz/.zst of one file, or a .zip: a run bundle, or files each read as if uploaded alone."""
    if kind != "zip":
        inner = compressed.decompress_stream(data, kind, display, limits)
        name = compressed.inner_name(display)
        return read_bytes(inner, display, limits, suffix=Path(name).suffix.lower(), unpacked=True)
    members = compressed.zip_members(data, display, limits)
    if any(Path(name).name == bundles.RUN_FILE for name in members):
        return [bundles.read_bundle_zip(data, display, limits)]
    if vllm_sweep.point_files(list(members)):
        return vllm_sweep.read_sweep(members, display)

    def member(blob: bytes, where: str, limits: Limits, suffix: str) -> list[ParsedRun]:
        return read_bytes(blob, where, limits, suffix=suffix, unpacked=True)

    return compressed.read_members(members, display, limits, member)


def _read_json(text: str, data: bytes, display: str, limits: Limits, suffix: str) -> list[ParsedRun]:
    objects = _json_values(text, display)
    if len(objects) == 1 and guidellm.looks_like_report(objects[0]):
        return guidellm.read_report(objects[0], data, display)
    if len(objects) == 1 and isinstance(objects[0], list) and objects[0] and isinstance(objects[0][0], dict):
        if prometheus.looks_like_query_range(objects[0]):
            objects = objects[0]
        elif not vllm_bench.looks_like_bench(objects[0][0]):
            return _plain(plain.read_records(objects[0], display), "json", data, display)
    if all(prometheus.looks_like_query_range(obj) for obj in objects):
        samples = prometheus.parse_query_range(objects, display)
        return prometheus.build_runs(samples, data, display, prometheus.RANGE_ORIGIN, limits)
    if all(vllm_bench.looks_like_bench(obj) for obj in objects):
        return vllm_bench.read_bench(objects, data, display)
    if all(isinstance(obj, dict) for obj in objects):
        if len(objects) == 1 and {"run_id", "bundle_version"} <= set(objects[0]):
            raise ValidationError.one(
                display,
                "a run.json alone carries no measurements",
                "upload the whole bundle directory as a .zip (run.json and its .parquet files)",
            )
        if len(objects) == 1 and suffix not in (".jsonl", ".ndjson"):
            raise ValidationError.one(
                display,
                "a JSON object that is not a vLLM bench result or a Prometheus query_range response",
                "see docs/formats.md for the accepted JSON formats",
            )
        return _plain(plain.read_records(objects, display), "jsonl", data, display)
    raise ValidationError.one(
        display, "JSON that is not a format cliffscope reads", "see docs/formats.md for the accepted JSON formats"
    )


def _read_yaml(text: str, data: bytes, display: str, limits: Limits) -> list[ParsedRun]:
    """A YAML file is read only as a GuideLLM report. Anchors and aliases are refused before anything is built: a
    report never uses them, and they are how a small YAML file expands into a huge structure."""
    import yaml

    if len(data) > limits.max_json_bytes:
        raise ValidationError.one(display, f"YAML over the {limits.max_json_bytes:,}-byte limit", "export as JSON")
    # libyaml's loader when PyYAML has it: the pure-Python one took 47 s for a 658 kB GuideLLM sweep report here
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ValidationError.one(display, "YAML with anchors or aliases", "upload the report as written")
        report = yaml.load(text, Loader=loader)  # a safe loader, C or Python
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValidationError.one(display, f"not valid YAML{where}", "upload the report as GuideLLM wrote it") from None
    except RecursionError:
        raise ValidationError.one(display, "YAML nested too deeply", "upload the report as written") from None
    if not guidellm.looks_like_report(report):
        raise ValidationError.one(
            display, "YAML that is not a GuideLLM benchmark report", "see docs/formats.md for the accepted formats"
        )
    return guidellm.read_report(report, data, display)


def _json_values(text: str, display: str) -> list[Any]:
    """Every top-level JSON value in the text: one document, JSON Lines, or concatenated objects (--append-result)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position, end = 0, len(text)
    while position < end:
        while position < end and text[position] in " \t\r\n":
            position += 1
        if position >= end:
            break
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise ValidationError.one(
                display,
                f"not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})",
                "write the file with a JSON library (no trailing commas, no NaN)",
                row=len(values) + 1 if values else None,
            ) from None
        except RecursionError:
            raise ValidationError.one(display, "JSON nested too deeply", "write plain objects") from None
        values.append(value)
    return values


def _plain(table: Any, fmt: str, data: bytes, display: str) -> list[ParsedRun]:
    kind = plain.table_kind(table.column_names)
    if kind is None:
        raise ValidationError.one(
            display,
            f"columns {table.column_names[:8]} are neither samples nor requests",
            "name columns as in docs/formats.md: t_s (engine samples), gpu_index (GPU samples), "
            "request_id/arrival_s (requests)",
        )
    return plain.split_runs(table, kind, fmt, data, display)
