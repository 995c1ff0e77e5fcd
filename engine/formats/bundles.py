"""Read a cliffscope run bundle (``engine.bundle``) from a directory or a .zip of one.

Only the bundle's known file names are opened: a zip's member names are matched against them and read into memory,
never extracted, so a hostile archive cannot write anywhere. Sizes are checked before anything is read.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from engine.bundle import RUN_FILE, TABLES
from engine.formats.model import Limits, ParsedRun, ValidationError

BUNDLE_FILES = (RUN_FILE, *(file for file, _schema, _required in TABLES.values()))


def is_bundle_dir(path: Path) -> bool:
    return path.is_dir() and (path / RUN_FILE).is_file()


def read_bundle_dir(path: Path, limits: Limits, display: str | None = None) -> ParsedRun:
    """Read a bundle directory; ``display`` names it in messages (defaults to the directory name)."""
    display = display or path.name
    blobs: dict[str, bytes] = {}
    total = 0
    for name in BUNDLE_FILES:
        member = path / name
        if not member.is_file():
            continue
        total += member.stat().st_size
        if total > limits.max_file_bytes:
            raise ValidationError.one(
                display,
                f"bundle is larger than the {limits.max_file_bytes:,}-byte limit",
                "split the run, or raise the store's max_file_bytes limit",
            )
        blobs[name] = member.read_bytes()
    return _parse_blobs(blobs, display, limits)


def read_bundle_zip(data: bytes, display: str, limits: Limits) -> ParsedRun:
    """Read a zipped bundle: run.json and the Parquet files at the top level or inside one folder."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ValidationError.one(display, f"not a readable zip archive ({exc})", "re-create the .zip") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_zip_members:
            raise ValidationError.one(
                display,
                f"{len(infos)} entries in the archive (limit {limits.max_zip_members})",
                "zip only one run bundle: run.json and its .parquet files",
            )
        chosen: dict[str, zipfile.ZipInfo] = {}
        prefixes: set[str] = set()
        for info in infos:
            if info.is_dir():
                continue
            parts = info.filename.replace("\\", "/").split("/")
            if len(parts) > 2 or parts[-1] not in BUNDLE_FILES:
                continue
            prefixes.add(parts[0] if len(parts) == 2 else "")
            if parts[-1] in chosen:
                raise ValidationError.one(
                    display, f"{parts[-1]} appears more than once in the archive", "zip exactly one run bundle"
                )
            chosen[parts[-1]] = info
        if RUN_FILE not in chosen:
            raise ValidationError.one(
                display, "no run.json in the archive", "zip a bundle directory (run.json + .parquet files)"
            )
        if len(prefixes) > 1:
            raise ValidationError.one(display, "files from several folders", "zip exactly one run bundle")
        total = sum(info.file_size for info in chosen.values())
        if total > limits.max_file_bytes:
            raise ValidationError.one(
                display,
                f"bundle unpacks to {total:,} bytes, over the {limits.max_file_bytes:,}-byte limit",
                "split the run, or raise the store's max_file_bytes limit",
            )
        blobs: dict[str, bytes] = {}
        for name, info in chosen.items():
            try:
                with archive.open(info) as handle:
                    blob = handle.read(limits.max_file_bytes + 1)
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
                raise ValidationError.one(display, f"cannot unpack {name} ({exc})", "re-create the .zip") from None
            if len(blob) > info.file_size:
                raise ValidationError.one(display, f"{name} unpacks larger than declared", "re-create the .zip")
            blobs[name] = blob
    return _parse_blobs(blobs, display, limits)


def _parse_blobs(blobs: dict[str, bytes], display: str, limits: Limits) -> ParsedRun:
    if RUN_FILE not in blobs:
        raise ValidationError.one(display, "run.json is missing", "add the run's metadata as run.json")
    meta = _parse_run_json(blobs[RUN_FILE], display)
    digest = hashlib.sha256()
    digest.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    tables: dict[str, pa.Table] = {}
    for table_name, (file, _schema, _required) in TABLES.items():
        blob = blobs.get(file)
        if blob is None:
            continue
        digest.update(file.encode() + b"\0" + hashlib.sha256(blob).digest())
        tables[table_name] = read_parquet_bytes(blob, f"{display}/{file}", limits)
    return ParsedRun(
        meta=meta, tables=tables, origin="bundle", file=display, content_sha256=digest.hexdigest(), strict=True
    )


def _parse_run_json(blob: bytes, display: str) -> dict[str, Any]:
    try:
        meta = json.loads(blob.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValidationError.one(
            f"{display}/run.json", f"not UTF-8 text (byte {exc.start})", "save run.json as UTF-8"
        ) from None
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ValidationError.one(
            f"{display}/run.json", f"not valid JSON{where}", "write run.json with json.dump"
        ) from None
    if not isinstance(meta, dict):
        raise ValidationError.one(f"{display}/run.json", "top level is not an object", "write a JSON object")
    return meta


def read_parquet_bytes(blob: bytes, display: str, limits: Limits) -> pa.Table:
    """Read a Parquet file from memory; a truncated or foreign file gives a ValidationError, not a crash."""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(blob))
        rows = parquet.metadata.num_rows
        if rows > limits.max_rows:
            raise ValidationError.one(
                display, f"{rows:,} rows is over the limit of {limits.max_rows:,}", "split the run or raise max_rows"
            )
        return parquet.read()
    except ValidationError:
        raise
    except (pa.ArrowException, OSError, ValueError, TypeError, IndexError, KeyError, MemoryError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ValidationError.one(
            display, f"not a readable Parquet file ({reason})", "re-write it with pyarrow or polars"
        ) from None
