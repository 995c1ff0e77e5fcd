"""Compressed inputs: ``.gz``, ``.zst`` and ``.zip`` of any accepted text format, unpacked in memory under a limit.

Scrapes are usually kept compressed (``metrics.prom.gz``), and a bench directory travels as a zip, so a user should not
have to unpack a file to upload it. The reader is still chosen by content: gzip and zstandard are recognised by their
magic bytes, and the inner file's name (``metrics.prom.gz`` -> ``metrics.prom``) only breaks ties, as for any file.

Every unpacking reads at most ``Limits.max_decompressed_bytes + 1`` bytes, whatever the archive declares, so a
decompression bomb is refused as soon as it passes the limit, naming the limit, without ever holding more than that.
Archives are not unpacked inside archives (a ``.gz`` inside a ``.zip`` is refused, naming the member): one level is
what scrapes and bench folders need, and it keeps the bound simple.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from collections.abc import Callable
from pathlib import PurePosixPath

from engine.formats.model import Limits, ParsedRun, ValidationError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd")
# Text formats a compressed file (or a zip member) may hold; a bundle's .parquet files are read by the bundle reader.
MEMBER_SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv", ".prom", ".txt", ".parquet", ".yaml", ".yml")

Reader = Callable[[bytes, str, Limits, str], list[ParsedRun]]


def kind_of(data: bytes) -> str | None:
    """``gzip``, ``zstd`` or ``zip`` by the file's first bytes; None for anything else."""
    if data.startswith(GZIP_MAGIC):
        return "gzip"
    if data.startswith(ZSTD_MAGIC):
        return "zstd"
    if data.startswith(ZIP_MAGICS):
        return "zip"
    return None


def inner_name(display: str) -> str:
    """``metrics.prom.gz`` -> ``metrics.prom``; a name without a compression suffix is kept."""
    for suffix in COMPRESSED_SUFFIXES:
        if display.lower().endswith(suffix):
            return display[: -len(suffix)]
    return display


def _over_limit(display: str, limits: Limits) -> ValidationError:
    return ValidationError.one(
        display,
        f"unpacks to more than {limits.max_decompressed_bytes:,} bytes (the max_decompressed_bytes limit)",
        "split the file before compressing it, or raise the store's max_decompressed_bytes limit",
    )


def decompress_stream(data: bytes, kind: str, display: str, limits: Limits) -> bytes:
    """Unpack a gzip or zstandard file, refusing a truncated or corrupt one and one over the size limit."""
    cap = limits.max_decompressed_bytes
    try:
        if kind == "gzip":
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
                out = handle.read(cap + 1)
        else:
            out = _unzstd(data, cap)
    except (EOFError, OSError, zlib.error, ValueError, _ZstdError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        label = "gzip" if kind == "gzip" else "zstandard"
        raise ValidationError.one(
            display, f"not a complete {label} file ({reason})", "copy or download the file again, whole"
        ) from None
    if len(out) > cap:
        raise _over_limit(display, limits)
    return out


class _ZstdError(Exception):
    pass


def _unzstd(data: bytes, cap: int) -> bytes:
    """Every frame of a zstandard file, stopping past ``cap`` bytes. The input is fed 256 bytes at a time: one
    zstandard block (at most 128 KiB of output) can be encoded in a few bytes, so the overshoot past ``cap`` stays a
    few MiB however hostile the file. A frame cut short is an error (the library itself returns a short read)."""
    import zstandard

    out = bytearray()
    rest = data
    try:
        while rest and len(out) <= cap:
            decompressor = zstandard.ZstdDecompressor().decompressobj()
            fed = 0
            while fed < len(rest) and not decompressor.eof and len(out) <= cap:
                out += decompressor.decompress(rest[fed : fed + 256])
                fed += 256
            if len(out) > cap:
                break
            if not decompressor.eof:
                raise _ZstdError("the file ends inside a frame")
            rest = decompressor.unused_data + rest[fed:]
    except zstandard.ZstdError as exc:
        raise _ZstdError(str(exc)) from None
    return bytes(out)


def zip_members(data: bytes, display: str, limits: Limits) -> dict[str, bytes]:
    """Every file in a zip, unpacked in memory (never extracted, so member names cannot write anywhere), with the
    total held under ``max_decompressed_bytes`` whatever the archive's directory declares."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValidationError.one(display, f"not a readable zip archive ({exc})", "re-create the .zip") from None
    members: dict[str, bytes] = {}
    total = 0
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir() and not _is_clutter(info.filename)]
        if len(infos) > limits.max_zip_members:
            raise ValidationError.one(
                display,
                f"{len(infos)} files in the archive (limit {limits.max_zip_members})",
                "zip fewer files, or raise the store's max_zip_members limit",
            )
        for info in infos:
            name = info.filename.replace("\\", "/")
            where = f"{display}/{name}"
            if name in members:
                raise ValidationError.one(where, "this member appears twice in the archive", "re-create the .zip")
            try:
                with archive.open(info) as handle:
                    blob = handle.read(limits.max_decompressed_bytes - total + 1)
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, ValueError,
                    zlib.error) as exc:  # fmt: skip
                reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
                raise ValidationError.one(
                    where, f"cannot unpack this member ({reason})", "re-create the .zip"
                ) from None
            total += len(blob)
            if total > limits.max_decompressed_bytes:
                raise _over_limit(where, limits)
            members[name] = blob
    return members


def _is_clutter(name: str) -> bool:
    """Entries archivers add beside the files (macOS resource forks, Finder state): never a user's data."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and (parts[0] == "__MACOSX" or parts[-1] == ".DS_Store")


def read_members(members: dict[str, bytes], display: str, limits: Limits, reader: Reader) -> list[ParsedRun]:
    """Read each member of a zip that is not a bundle as a file of its own; the runs of all of them land together
    (one transaction), so one bad member refuses the whole archive, naming that member."""
    if not members:
        raise ValidationError.one(display, "the archive holds no files", "zip the files to upload")
    runs: list[ParsedRun] = []
    for name, blob in members.items():
        where = f"{display}/{name}"
        suffix = PurePosixPath(name).suffix.lower()
        if suffix in COMPRESSED_SUFFIXES or kind_of(blob) is not None:
            raise ValidationError.one(
                where, "an archive or compressed file inside the archive", "zip the uncompressed files themselves"
            )
        if suffix not in MEMBER_SUFFIXES:
            raise ValidationError.one(
                where,
                f"{suffix or 'a name without an extension'} is not a format cliffscope reads",
                f"keep only files ending in {', '.join(MEMBER_SUFFIXES)} in the archive (docs/formats.md)",
            )
        runs.extend(reader(blob, where, limits, suffix))
    return runs
