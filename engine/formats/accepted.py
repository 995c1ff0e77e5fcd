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
    """One format: what it is, its extensions, an example file name, the command that writes one, what it cannot
    supply (cliffscope stores those as unknown and says so in the run's notes), and where it is documented."""

    name: str
    suffixes: tuple[str, ...]
    example: str
    section: str  # heading in docs/formats.md
    made_by: str = ""
    lacks: str = ""


_NO_SERVER = "the server's configuration (device, layout, scheduler limits, KV capacity) unless given with --meta"
ACCEPTED_FORMATS: tuple[AcceptedFormat, ...] = (
    AcceptedFormat("cliffscope run bundle (run.json + Parquet), zipped", (".zip",), "my-run.zip", "1",
                   "python -m collectors run ...", "nothing: the collector records every field"),
    AcceptedFormat(
        "vllm bench serve --save-result JSON (with or without --save-detailed)", (".json",), "vllm-infqps.json", "2",
        "vllm bench serve ... --save-result [--save-detailed]",
        f"queue times, preemptions, the engine timeline; without --save-detailed every per-request figure; "
        f"{_NO_SERVER}",
    ),
    AcceptedFormat("vllm bench sweep output folder, zipped", (".zip",), "sweep-results.zip", "2b",
                   "vllm bench sweep serve -o DIR -e NAME ...",
                   "as vllm bench serve, less the serve parameters the sweep set"),
    AcceptedFormat("Prometheus text with timestamps (vLLM and DCGM)", (".prom", ".txt"), "metrics.prom", "3a",
                   "a scraper keeping timestamps (GET /metrics every few seconds)",
                   "per-request rows (latencies come from histograms), workload and seed, device and layout"),
    AcceptedFormat("Prometheus query_range JSON (vLLM and DCGM series)", (".json",), "query_range.json", "3b",
                   "curl PROMETHEUS/api/v1/query_range?query=... (or the live form below)",
                   "as Prometheus text"),
    AcceptedFormat("GuideLLM benchmark report (one run per benchmark)", (".json", ".yaml", ".yml"),
                   "benchmarks.json, benchmarks.yaml.gz", "6",
                   "guidellm run ... --output kind=json,path=benchmarks.json",
                   f"preemptions, the engine timeline, queue times unless vLLM runs with "
                   f"--enable-per-request-metrics; {_NO_SERVER}"),
    AcceptedFormat("published record (cliffscope-published/1 TOML)", (".toml",), "gh-vllm-12345-llama-h100.toml", "5",
                   "written by hand from a public source", "everything the source does not state"),
    AcceptedFormat("table of samples or requests", (".csv", ".jsonl", ".ndjson", ".parquet"), "requests.csv", "4",
                   "any tool, with the bundle's column names", f"the columns left out; {_NO_SERVER}"),
    AcceptedFormat(
        "any of the above (one file, or several in a .zip) compressed", (*COMPRESSED_SUFFIXES, ".zip"),
        "metrics.prom.gz, bench.json.zst, scrapes.zip", "Compressed files", "gzip, zstd or zip",
        "as the format inside",
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
