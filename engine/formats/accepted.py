"""The formats cliffscope reads, as the Upload page and the CLI's messages list them (docs/formats.md has the detail).

One place says which extensions an upload may have, so that the page validates the name itself and names the
accepted formats in its message, instead of leaving a refused file to the uploader widget's bare red icon.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from engine.formats.compressed import COMPRESSED_SUFFIXES


@dataclass(frozen=True)
class AcceptedFormat:
    """One format: what it is, the extensions it comes with, an example file name and where it is documented."""

    name: str
    suffixes: tuple[str, ...]
    example: str
    section: str  # heading in docs/formats.md


ACCEPTED_FORMATS: tuple[AcceptedFormat, ...] = (
    AcceptedFormat("cliffscope run bundle (run.json + Parquet), zipped", (".zip",), "my-run.zip", "1"),
    AcceptedFormat(
        "vllm bench serve --save-result JSON (with or without --save-detailed)", (".json",), "vllm-infqps.json", "2"
    ),
    AcceptedFormat("vllm bench sweep output folder, zipped", (".zip",), "sweep-results.zip", "2b"),
    AcceptedFormat("Prometheus text with timestamps (vLLM and DCGM)", (".prom", ".txt"), "metrics.prom", "3a"),
    AcceptedFormat("Prometheus query_range JSON (vLLM and DCGM series)", (".json",), "query_range.json", "3b"),
    AcceptedFormat("GuideLLM benchmark report", (".json", ".yaml", ".yml"), "benchmarks.json", "6"),
    AcceptedFormat("published record (cliffscope-published/1 TOML)", (".toml",), "gh-vllm-12345-llama-h100.toml", "5"),
    AcceptedFormat("table of samples or requests", (".csv", ".jsonl", ".ndjson", ".parquet"), "requests.csv", "4"),
    AcceptedFormat(
        "any of the above (one file, or several in a .zip) compressed", (*COMPRESSED_SUFFIXES, ".zip"),
        "metrics.prom.gz, bench.json.zst, scrapes.zip", "Compressed files",
    ),
)  # fmt: skip

UPLOAD_SUFFIXES: tuple[str, ...] = tuple(dict.fromkeys(s for f in ACCEPTED_FORMATS for s in f.suffixes))


def refusal(filename: str) -> str | None:
    """Why a file name cannot be an upload (its extension is not one we read), or None when it may be one."""
    suffix = PurePath(filename).suffix.lower()
    if suffix in UPLOAD_SUFFIXES:
        return None
    got = f"its extension {suffix!r}" if suffix else "it has no extension"
    return (
        f"{filename} was not read: {got} is not one cliffscope reads. Accepted: {', '.join(UPLOAD_SUFFIXES)} "
        "(the formats are listed above the uploader; docs/formats.md has every column)."
    )
