"""Pick the reader for an input by its content: a bundle directory, a zip, Parquet, JSON or text.

The file name is used only for messages (and, for plain tables, as the run's default display name); it never
decides where anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.formats import bundles
from engine.formats.model import Limits, ParsedRun, ValidationError


def read_path(
    path: Path, limits: Limits, *, display: str | None = None, overrides: Mapping[str, Any] | None = None
) -> list[ParsedRun]:
    """Read every run in ``path``. ``overrides`` fill or replace run fields (e.g. the model an upload page asked
    for); a bundle's own fields win only where no override is given. Raises ValidationError."""
    display = display or path.name
    if path.is_dir():
        if not bundles.is_bundle_dir(path):
            raise ValidationError.one(
                display, "a directory without run.json", "point at a run bundle directory, or at the files inside it"
            )
        runs = [bundles.read_bundle_dir(path, limits, display)]
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
    if overrides:
        for run in runs:
            for key, value in overrides.items():
                if value is not None:
                    run.meta[key] = value
                    if key in run.missing:
                        run.missing.remove(key)
    return runs


def read_bytes(data: bytes, display: str, limits: Limits, *, suffix: str = "") -> list[ParsedRun]:
    """Read runs from an in-memory file (an upload). ``suffix`` breaks ties for plain text (``.csv`` vs ``.txt``)."""
    if len(data) > limits.max_file_bytes:
        raise ValidationError.one(
            display, f"{len(data):,} bytes is over the {limits.max_file_bytes:,}-byte limit", "split the file"
        )
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return [bundles.read_bundle_zip(data, display, limits)]
    raise ValidationError.one(
        display,
        "not a format cliffscope reads",
        "upload a run bundle (directory or .zip); see docs/formats.md for every accepted format",
    )
