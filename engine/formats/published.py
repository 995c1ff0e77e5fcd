"""Published runs ("cliffscope-published/1"): one public figure set per TOML file, with its source, checked.

A published record is the third kind of run beside measured and predicted: what vLLM printed on real GPUs in a
public thread, log or paper. It carries no timelines, only the figures the source states, so the record itself is
the evidence and every rule here guards that the record says no more than its source: a source (URL or citation)
and the verbatim quote lines each figure is read from are required, each figure must be found in a quote line, the
flags use vLLM's own names (a typo is refused, not kept as a "stated" flag), and values must be physical
(durations > 0, throughput = completed / duration within the printed rounding, TTFT within the run's duration,
gpu_memory_utilization in (0, 1], the GPU count equal to DP × TP × PP). The format is documented in docs/formats.md.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.bundle import canonical_config_sha256
from engine.catalog import MODELS_DIR, CatalogError, list_gpus, load_gpu
from engine.formats.model import ParsedRun, Problem, ValidationError
from engine.formats.outside import content_sha256, outside_meta
from engine.formats.published_schema import (
    CLIENT_FLAGS,
    COMMON_SECTIONS,
    DATASET_NAMES,
    DTYPES,
    FIGURES,
    FORMAT,
    KIND_SECTIONS,
    KV_CACHE_DTYPES,
    SERVER_FLAGS,
    SOURCE_KEYS,
    TOP_KEYS,
    WORKLOAD_KEYS,
    RecordKind,
)

ORIGIN = "published"
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{2,127}$")
DATE_PATTERN = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
UNSTATED = "unstated"
MAX_QUOTE_LINES = 64
MAX_TEXT = 4000
MAX_FIGURE = 1e15  # above any real run's tokens, requests, seconds or GiB; keeps stored integers in range
MAX_FLAG_INT = 2**31 - 1  # vLLM's size flags are 32-bit in the store (max_model_len, max_num_seqs, ...)
MAX_BYTES = 2**62
FORMAT_MARK = re.compile(r'^\s*format\s*=\s*"cliffscope-published/', re.MULTILINE)


@dataclass(frozen=True)
class Source:
    """Where the figures come from: ``url`` or ``citation`` (at least one), and the lines they are read from."""

    url: str | None
    citation: str | None
    date: str | None
    quote: tuple[str, ...]
    checked: str
    approximate: tuple[str, ...] = ()  # figures the source gives as "≈" (read from prose or a plot's label)
    publisher: str | None = None  # who published it (several pages of one lab are one source for a fit's folds)

    @property
    def reference(self) -> str:
        return self.url or self.citation or ""


@dataclass(frozen=True)
class Flags:
    """Stated flags (vLLM's argument names -> values) and the names the source leaves unstated."""

    stated: tuple[tuple[str, Any], ...]
    unstated: tuple[str, ...] = ()

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.stated).get(name, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.stated)


@dataclass(frozen=True)
class PublishedRecord:
    """One validated published record. ``figures`` keep the source's units, named as in ``FIGURES``."""

    id: str
    kind: RecordKind
    title: str
    source: Source
    gpu: str
    num_gpus: int
    vllm_version: str  # "unstated" when the source does not say
    model_name: str
    hf_id: str | None
    server: Flags
    client: Flags
    workload: tuple[tuple[str, Any], ...]
    env: tuple[tuple[str, str], ...]
    figures: tuple[tuple[str, float], ...]
    notes: str | None = None
    explained_miss: str | None = None  # why the engine is known to miss this record, read from the source

    def figure(self, name: str) -> float | None:
        return dict(self.figures).get(name)

    @property
    def layout(self) -> tuple[int, int, int]:
        """(DP, TP, PP), vLLM's default 1 for a degree the source did not set."""
        return (
            int(self.server.get("data_parallel_size", 1)),
            int(self.server.get("tensor_parallel_size", 1)),
            int(self.server.get("pipeline_parallel_size", 1)),
        )


# ------------------------------------------------------------------------------------------------------- reading


def looks_like_published(text: str, suffix: str = "") -> bool:
    """A TOML upload, or any text whose ``format`` line names this format."""
    return suffix == ".toml" or bool(FORMAT_MARK.search(text[:4096]))


def read_published(data: bytes, display: str) -> list[ParsedRun]:
    """Parse and validate one record; returns its run (summary only: no timelines). Raises ValidationError."""
    record = parse_record(data, display)
    return [record_to_run(record, data, display)]


def parse_record(data: bytes, display: str) -> PublishedRecord:
    """The typed record in ``data`` (TOML text), every problem found named by field and fix."""
    try:
        table = tomllib.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ValidationError.one(display, "not UTF-8 text", "save the record as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError.one(display, f"not valid TOML ({exc})", "fix the TOML syntax at that line") from None
    check = _Checker(display)
    record = _build(table, check, display)
    check.raise_if_any()
    assert record is not None
    return record


class _Checker:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, field: str, message: str, fix: str) -> None:
        if len(self.problems) < 30:
            self.problems.append(Problem(self.file, message, fix, column=field))

    def raise_if_any(self) -> None:
        if self.problems:
            raise ValidationError(self.problems)

    def typed(self, field: str, value: Any, types: tuple[type, ...], meaning: str) -> bool:
        ok = (bool in types) if isinstance(value, bool) else isinstance(value, types)
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False
        if not ok:
            names = " or ".join(
                "number" if t is float else t.__name__ for t in types if t is not int or float not in types
            )
            self.add(field, f"expected {names}, got {value!r:.60}", f"write {field} as {meaning}")
        return ok


def _build(table: dict[str, Any], check: _Checker, display: str) -> PublishedRecord | None:
    fmt = table.get("format")
    if fmt != FORMAT:
        check.add("format", f"format is {fmt!r}, not {FORMAT!r}", f'start the file with format = "{FORMAT}"')
        check.raise_if_any()
    kind = _kind(table, check)
    allowed = TOP_KEYS | COMMON_SECTIONS | (KIND_SECTIONS[kind] if kind else frozenset())
    for key in table:
        if key not in allowed:
            other = [k.value for k in RecordKind if key in KIND_SECTIONS[k]]
            why = f"only {' and '.join(other)} records have [{key}]" if other else "not a field of this format"
            check.add(key, f"unknown section or key {key!r} ({why})", "remove it or fix its name (docs/formats.md)")
    record_id = _record_id(table, check, display)
    title = _text(table, "title", check, required=True)
    source = _source(table.get("source"), check)
    gpu, num_gpus = _hardware(table.get("hardware"), check)
    version = _software(table.get("software"), check)
    model_name, hf_id = _model(table.get("model"), check)
    server = _flags(table.get("server", {}), "server", SERVER_FLAGS, check)
    client = _flags(table.get("client", {}), "client", CLIENT_FLAGS, check)
    workload = _workload(table.get("workload", {}), check)
    env = _env(table.get("env", {}), check)
    figures = _figures(table.get("figures"), kind, check)
    notes = _text(table, "notes", check, required=False)
    explained_miss = _text(table, "explained_miss", check, required=False)
    check.raise_if_any()
    assert kind is not None and source is not None and gpu is not None
    record = PublishedRecord(
        id=record_id,
        kind=kind,
        title=title,
        source=source,
        gpu=gpu,
        num_gpus=num_gpus,
        vllm_version=version,
        model_name=model_name,
        hf_id=hf_id,
        server=server,
        client=client,
        workload=workload,
        env=env,
        figures=figures,
        notes=notes,
        explained_miss=explained_miss,
    )
    _check_physical(record, check)
    _check_quoted(record, check)
    return record


def _kind(table: dict[str, Any], check: _Checker) -> RecordKind | None:
    value = table.get("kind")
    try:
        return RecordKind(value)
    except ValueError:
        kinds = " | ".join(k.value for k in RecordKind)
        check.add("kind", f"kind {value!r} is not one of {kinds}", f"set kind to {kinds}")
        check.raise_if_any()
    return None


def _record_id(table: dict[str, Any], check: _Checker, display: str) -> str:
    value = table.get("id")
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        check.add("id", f"id {value!r} is not 3-128 lower-case letters, digits, '.', '_', '-'", "rename the record")
        return ""
    stem = Path(display).stem if display.endswith(".toml") else None
    if stem is not None and stem != value:
        check.add("id", f"id {value!r} differs from the file name {display!r}", f"name the file {value}.toml")
    return value


def _text(table: dict[str, Any], key: str, check: _Checker, *, required: bool, where: str = "") -> str:
    field = f"{where}{key}"
    value = table.get(key)
    if value is None:
        if required:
            check.add(field, "missing", f'add {key} = "..."')
        return "" if required else None  # type: ignore[return-value]
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        check.add(field, f"expected non-empty text of at most {MAX_TEXT} characters", f"write {key} as text")
        return ""
    return value


def _section(value: Any, name: str, check: _Checker, required: bool = True) -> dict[str, Any] | None:
    if value is None:
        if required:
            check.add(name, f"the [{name}] section is missing", f"add [{name}] (docs/formats.md)")
        return None
    if not isinstance(value, dict):
        check.add(name, f"{name} is not a table", f"write [{name}] as a TOML table")
        return None
    return value


def _unknown(section: dict[str, Any], name: str, known: frozenset[str] | set[str], check: _Checker) -> None:
    for key in section:
        if key not in known:
            check.add(f"{name}.{key}", f"unknown key {key!r} in [{name}]", f"use one of {', '.join(sorted(known))}")


def _source(value: Any, check: _Checker) -> Source | None:
    section = _section(value, "source", check)
    if section is None:
        return None
    _unknown(section, "source", SOURCE_KEYS, check)
    url = _text(section, "url", check, required=False, where="source.")
    citation = _text(section, "citation", check, required=False, where="source.")
    publisher = _text(section, "publisher", check, required=False, where="source.")
    if not url and not citation:
        check.add("source.url", "a record without a source", "add source.url (https://...) or source.citation")
    if url and not url.startswith("https://"):
        check.add("source.url", f"{url!r:.80} is not an https:// address", "give the page's https:// address")
    quote = section.get("quote")
    if not isinstance(quote, list) or not quote:
        check.add("source.quote", "no quote lines", 'add quote = ["..."]: the verbatim lines each figure is read from')
        quote = []
    elif len(quote) > MAX_QUOTE_LINES or not all(isinstance(q, str) and q.strip() for q in quote):
        check.add("source.quote", "quote lines must be 1-64 non-empty strings", "copy each line verbatim as text")
        quote = []
    dates = {}
    for key, required in (("date", False), ("checked", True)):
        text = section.get(key)
        if text is None and not required:
            dates[key] = None
            continue
        if not isinstance(text, str) or not DATE_PATTERN.match(text):
            check.add(f"source.{key}", f"{key} {text!r} is not YYYY-MM-DD", f"write source.{key} as YYYY-MM-DD")
        dates[key] = text if isinstance(text, str) else None
    approximate = section.get("approximate", [])
    if not isinstance(approximate, list) or not all(isinstance(a, str) for a in approximate):
        check.add("source.approximate", "expected a list of figure names", 'write approximate = ["mean_ttft_ms"]')
        approximate = []
    return Source(
        url=url or None,
        citation=citation or None,
        date=dates["date"],
        quote=tuple(quote),
        checked=dates["checked"] or "",
        approximate=tuple(approximate),
        publisher=publisher or None,
    )


def _hardware(value: Any, check: _Checker) -> tuple[str | None, int]:
    section = _section(value, "hardware", check)
    if section is None:
        return None, 0
    _unknown(section, "hardware", {"gpu", "num_gpus"}, check)
    gpu = section.get("gpu")
    gpus = [name for name in list_gpus() if load_gpu(name).kind == "gpu"]
    if gpu not in gpus:
        check.add(
            "hardware.gpu",
            f"unknown hardware {gpu!r}: not a GPU in data/gpus.toml",
            f"use one of {', '.join(gpus)}, or add the GPU to data/gpus.toml with its datasheet source",
        )
    num = section.get("num_gpus")
    if check.typed("hardware.num_gpus", num, (int,), "a whole number of GPUs") and not 1 <= num <= 4096:
        check.add("hardware.num_gpus", f"num_gpus {num} is not 1..4096", "write the GPU count the run used")
    return (gpu if isinstance(gpu, str) else None), (num if isinstance(num, int) else 0)


def _software(value: Any, check: _Checker) -> str:
    section = _section(value, "software", check)
    if section is None:
        return UNSTATED
    _unknown(section, "software", {"vllm_version"}, check)
    version = section.get("vllm_version")
    if not isinstance(version, str) or not re.match(r"^(unstated|v?\d+(\.\d+)*([.+-][A-Za-z0-9.+-]*)?)$", version):
        check.add("software.vllm_version", f"{version!r} is not a version", 'write e.g. "0.6.3", or "unstated"')
        return UNSTATED
    return version


def _model(value: Any, check: _Checker) -> tuple[str, str | None]:
    section = _section(value, "model", check)
    if section is None:
        return "", None
    _unknown(section, "model", {"name", "hf_id"}, check)
    name = section.get("name")
    if not isinstance(name, str) or not (MODELS_DIR / name / "config.json").is_file() or "/" in name:
        check.add(
            "model.name",
            f"unknown model folder {name!r} (no data/models/{name}/config.json)",
            "add the model's public config.json under data/models/<name>/ with a SOURCE.md, or fix the name",
        )
    hf_id = section.get("hf_id")
    if hf_id is not None and not (isinstance(hf_id, str) and re.match(r"^[\w.-]+/[\w.-]+$", hf_id)):
        check.add("model.hf_id", f"{hf_id!r} is not an owner/name id", "write the checkpoint's owner/name")
        hf_id = None
    return (name if isinstance(name, str) else ""), hf_id


def _flags(value: Any, name: str, known: dict[str, tuple[type, ...]], check: _Checker) -> Flags:
    section = _section(value, name, check, required=False) or {}
    stated: list[tuple[str, Any]] = []
    for key, item in section.items():
        if key == "unstated":
            continue
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.8)
            hint = f"did you mean {close[0]!r}? " if close else ""
            check.add(f"{name}.{key}", f"unknown flag {key!r}", f"{hint}use vLLM's argument name (docs/formats.md)")
            continue
        if not check.typed(f"{name}.{key}", item, known[key], "its vLLM type"):
            continue
        limit = MAX_BYTES if key.endswith("_bytes") else MAX_FLAG_INT
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) > limit:
            check.add(f"{name}.{key}", f"{key} = {item} is beyond any real setting", f"write the {key} the run used")
            continue
        stated.append((key, item))
    unstated = section.get("unstated", [])
    if not isinstance(unstated, list) or not all(isinstance(u, str) for u in unstated):
        check.add(f"{name}.unstated", "expected a list of flag names", 'write unstated = ["max_num_seqs"]')
        unstated = []
    for flag in unstated:
        if flag not in known:
            check.add(f"{name}.unstated", f"unknown flag {flag!r} in unstated", "use vLLM's argument name")
        elif flag in section:
            check.add(f"{name}.{flag}", f"{flag} is both stated and unstated", f"remove {flag} from one of them")
    return Flags(stated=tuple(sorted(stated)), unstated=tuple(sorted(set(unstated))))


def _workload(value: Any, check: _Checker) -> tuple[tuple[str, Any], ...]:
    section = _section(value, "workload", check, required=False) or {}
    out = []
    for key, item in section.items():
        if key not in WORKLOAD_KEYS:
            check.add(f"workload.{key}", f"unknown key {key!r}", f"use one of {', '.join(WORKLOAD_KEYS)}")
        elif not check.typed(f"workload.{key}", item, WORKLOAD_KEYS[key], "text or a whole number"):
            continue
        elif isinstance(item, int) and not 0 < item <= MAX_FLAG_INT:
            check.add(
                f"workload.{key}", f"{key} = {item} is not a real request count", "write the count the source states"
            )
        else:
            out.append((key, item))
    return tuple(sorted(out))


def _env(value: Any, check: _Checker) -> tuple[tuple[str, str], ...]:
    section = _section(value, "env", check, required=False) or {}
    out = []
    for key, item in section.items():
        if not re.match(r"^(VLLM|NCCL|CUDA|TORCH)_[A-Z0-9_]+$", key) or not isinstance(item, str):
            check.add(f"env.{key}", "not a VLLM_/NCCL_/CUDA_/TORCH_ variable with a text value", 'write KEY = "1"')
            continue
        out.append((key, item))
    return tuple(sorted(out))


def _figures(value: Any, kind: RecordKind | None, check: _Checker) -> tuple[tuple[str, float], ...]:
    section = _section(value, "figures", check)
    if section is None or kind is None:
        return ()
    allowed = FIGURES[kind]
    out: list[tuple[str, float]] = []
    for key, item in section.items():
        if key not in allowed:
            owners = [k.value for k in RecordKind if key in FIGURES[k]]
            why = f"a {' / '.join(owners)} figure, not a {kind.value} one" if owners else "not a figure of this format"
            check.add(f"figures.{key}", f"{key} is {why}", "fix the kind or the figure's name (docs/formats.md)")
            continue
        unit, whole = allowed[key]
        types = (int,) if whole else (int, float)
        if not check.typed(f"figures.{key}", item, types, f"a {'whole ' if whole else ''}number in {unit}"):
            continue
        if item < 0:
            check.add(f"figures.{key}", f"{key} = {item} is negative", f"write the {unit} the source states")
            continue
        if item > MAX_FIGURE:
            check.add(f"figures.{key}", f"{key} = {item} is beyond any real run", f"write the {unit} the source states")
            continue
        out.append((key, item))
    if not out and not check.problems:
        check.add("figures", "no figures", "add the figures the source states, named as in docs/formats.md")
    return tuple(sorted(out))


# ------------------------------------------------------------------------------------------------ physical checks


def _check_physical(record: PublishedRecord, check: _Checker) -> None:
    """Refuse values no real run prints; each message names the field and the fix."""
    _check_server(record, check)
    _check_client(record, check)
    figures = dict(record.figures)
    for name in ("duration_s", "completion_s", "request_throughput", "output_throughput", "total_token_throughput"):
        if name in figures and figures[name] <= 0:
            check.add(f"figures.{name}", f"{name} = {figures[name]} is not positive", "write the figure as printed")
    for name in record.source.approximate:
        if name not in figures:
            check.add("source.approximate", f"{name!r} is not a figure of this record", "list only its figures")
    if record.kind is RecordKind.BENCH:
        _check_bench(record, figures, check)
    if record.kind is RecordKind.STARTUP:
        _check_startup(record, figures, check)
    for metric in ("ttft", "tpot", "itl", "e2el"):
        median, p99 = figures.get(f"median_{metric}_ms"), figures.get(f"p99_{metric}_ms")
        if median is not None and p99 is not None and p99 < median * (1 - 1e-6) - 0.01:
            check.add(f"figures.p99_{metric}_ms", f"P99 {p99} ms is below the median {median} ms", "check the figures")


def _check_server(record: PublishedRecord, check: _Checker) -> None:
    server = record.server.as_dict()
    for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "max_model_len",
                 "max_num_seqs", "max_num_batched_tokens", "block_size"):  # fmt: skip
        if name in server and server[name] <= 0:
            check.add(f"server.{name}", f"{name} = {server[name]} is not positive", f"write the {name} the run used")
    util = server.get("gpu_memory_utilization")
    if util is not None and not 0 < util <= 1:
        check.add("server.gpu_memory_utilization", f"{util} is outside (0, 1]", "write a fraction such as 0.9")
    block = server.get("block_size")
    if block is not None and block > 0 and block & (block - 1):
        check.add("server.block_size", f"block_size {block} is not a power of two", "write the --block-size used")
    if server.get("dtype") not in (None, *DTYPES):
        check.add("server.dtype", f"dtype {server['dtype']!r} is not vLLM's", f"use one of {', '.join(DTYPES)}")
    if server.get("kv_cache_dtype") not in (None, *KV_CACHE_DTYPES):
        check.add("server.kv_cache_dtype", f"{server['kv_cache_dtype']!r} is not vLLM's", f"use {KV_CACHE_DTYPES}")
    dp, tp, pp = record.layout
    if min(dp, tp, pp) > 0 and record.num_gpus and dp * tp * pp != record.num_gpus:
        check.add(
            "hardware.num_gpus",
            f"{record.num_gpus} GPUs, but data × tensor × pipeline parallel = {dp} × {tp} × {pp} = {dp * tp * pp}",
            "state the parallel sizes the run used (vLLM's default 1 applies to each one left out)",
        )


def _check_client(record: PublishedRecord, check: _Checker) -> None:
    client = record.client.as_dict()
    rate = client.get("request_rate")
    if (isinstance(rate, str) and rate != "inf") or (isinstance(rate, (int, float)) and not rate > 0):
        check.add("client.request_rate", f'request_rate {rate!r} is neither > 0 nor "inf"', 'write a rate or "inf"')
    for name in ("num_prompts", "max_concurrency", "random_input_len", "random_output_len", "input_len", "output_len"):
        if name in client and client[name] <= 0:
            check.add(f"client.{name}", f"{name} = {client[name]} is not positive", f"write the {name} the run used")
    if "burstiness" in client and not client["burstiness"] > 0:
        check.add("client.burstiness", "burstiness must be > 0", "write the --burstiness used (1.0 = Poisson)")
    if "random_range_ratio" in client and not 0 <= client["random_range_ratio"] <= 1:
        check.add("client.random_range_ratio", "random_range_ratio must be in [0, 1]", "write the ratio used")
    if client.get("dataset_name") not in (None, *DATASET_NAMES):
        check.add("client.dataset_name", f"{client['dataset_name']!r} is not vLLM's", f"use one of {DATASET_NAMES}")


def _consistent(stated: float, computed: float) -> bool:
    """Within the rounding of a printed figure (2 decimals) and of the duration it was divided by (1 %)."""
    return abs(stated - computed) <= 0.01 * abs(computed) + 0.011


def _check_bench(record: PublishedRecord, figures: dict[str, float], check: _Checker) -> None:
    duration = figures.get("duration_s")
    completed = figures.get("completed")
    prompts = record.client.get("num_prompts")
    if completed is not None and prompts is not None and completed > prompts:
        check.add("figures.completed", f"{completed} completed of {prompts} prompts", "check completed / num_prompts")
    if duration is None or duration <= 0:
        return
    for name, numerator in (
        ("request_throughput", completed),
        ("output_throughput", figures.get("total_output_tokens")),
        ("total_token_throughput", _sum(figures.get("total_input_tokens"), figures.get("total_output_tokens"))),
    ):
        if name in figures and numerator is not None and not _consistent(figures[name], numerator / duration):
            check.add(
                f"figures.{name}",
                f"{name} = {figures[name]} but the counts give {numerator / duration:.2f} over {duration} s",
                "copy the figures from one run's output, unchanged",
            )
    for name in ("mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_e2el_ms", "median_e2el_ms"):
        if name in figures and figures[name] / 1000.0 > duration * 1.001:
            check.add(f"figures.{name}", f"{name} = {figures[name]} ms is longer than the run ({duration} s)",
                      "check the figure's unit (ms) and the duration (s)")  # fmt: skip


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _check_startup(record: PublishedRecord, figures: dict[str, float], check: _Checker) -> None:
    tokens = figures.get("kv_cache_tokens")
    block = record.server.get("block_size")
    # vLLM V1 reports num_blocks // len(kv_cache_groups) * block_size tokens: a multiple of a stated block size.
    if tokens is not None and block and tokens % block:
        check.add("figures.kv_cache_tokens", f"{tokens} tokens is not a multiple of block_size {block}",
                  "copy the 'GPU KV cache size' line's figure unchanged")  # fmt: skip
    total = figures.get("total_gpu_memory_gib")
    try:
        device_gib = load_gpu(record.gpu).memory_bytes / 2**30
    except CatalogError:
        return
    if total is not None and total > device_gib * 1.02:
        check.add("figures.total_gpu_memory_gib", f"{total} GiB is over the {record.gpu}'s {device_gib:.1f} GiB",
                  "check the GPU and the unit (GiB)")  # fmt: skip
    for name in ("available_kv_cache_gib", "model_weights_gib", "activation_peak_gib", "non_torch_gib"):
        if name in figures and figures[name] > device_gib * 1.02:
            check.add(f"figures.{name}", f"{figures[name]} GiB is over one {record.gpu}'s {device_gib:.1f} GiB",
                      "vLLM logs per-GPU memory figures: write the per-GPU value")  # fmt: skip


# ----------------------------------------------------------------------------------------- figures in the quotes

_NUMBER = re.compile(r"(?<![\d.])\d[\d,]*(?:\.\d+)?")


def _numbers(lines: tuple[str, ...]) -> list[float]:
    """Every number a quote line states. A comma is read both ways: as a thousands separator ("426,288" as
    vLLM logs it) and as a field separator, so a row of a published CSV export ("mi300x,vllm,437.28,500") states
    each of its cells."""
    out = []
    for line in lines:
        cells = line.split(",") if "," in line else []
        for match in (*_NUMBER.finditer(line), *(m for cell in cells for m in _NUMBER.finditer(cell))):
            text = match.group().replace(",", "")
            try:
                out.append(float(text))
            except ValueError:
                continue
    return out


def _check_quoted(record: PublishedRecord, check: _Checker) -> None:
    """Each figure must appear in a quote line (as printed, or in s where the figure is in ms): a figure typed
    from memory or computed by the record's author is refused."""
    found = _numbers(record.source.quote)
    for name, value in record.figures:
        candidates = [value, value / 1000.0] if name.endswith("_ms") else [value]
        if not any(math.isclose(v, c, rel_tol=1e-9, abs_tol=1e-9) for v in found for c in candidates):
            check.add(f"figures.{name}", f"{name} = {value} is not in any quote line",
                      "add the source's line it is read from to source.quote, verbatim")  # fmt: skip


# ------------------------------------------------------------------------------------------------------- as a run


def record_to_run(record: PublishedRecord, data: bytes, display: str) -> ParsedRun:
    """A run with summary figures only: bench -> the client's figures, startup -> KV capacity, paper -> completion."""
    config_path = MODELS_DIR / record.model_name / "config.json"
    config = json.loads(config_path.read_text())
    server = record.server.as_dict()
    dp, tp, pp = record.layout
    figures = dict(record.figures)
    rate = record.client.get("request_rate")
    known: dict[str, Any] = {
        "run_id": record.id,
        "name": record.title,
        "created_at": record.source.date,
        "device": record.gpu,
        "num_devices": record.num_gpus,
        "model_name": record.model_name,
        "model_config": config,
        "model_config_sha256": canonical_config_sha256(config),
        "dp": dp,
        "tp": tp,
        "pp": pp,
        "vllm_version": None if record.vllm_version == UNSTATED else record.vllm_version.lstrip("v"),
        "kv_capacity_tokens": _int_or_none(figures.get("kv_cache_tokens")),
        "kv_blocks": _int_or_none(figures.get("num_gpu_blocks")),
        "num_requests": _int_or_none(
            figures.get("completed") or record.client.get("num_prompts") or dict(record.workload).get("num_requests")
        ),
        "arrival_rate": float(rate) if isinstance(rate, (int, float)) else None,
    }
    for key in ("dtype", "quantization", "kv_cache_dtype", "max_num_seqs", "max_num_batched_tokens",
                "enable_chunked_prefill", "block_size", "max_model_len", "gpu_memory_utilization",
                "kv_cache_memory_bytes"):  # fmt: skip
        if key in server:
            known[key] = server[key]
    notes = [f"Published {record.kind.value} record; source: {record.source.reference}."]
    if record.server.unstated:
        notes.append(f"Not stated by the source (vLLM's default applies): {', '.join(record.server.unstated)}.")
    meta, missing = outside_meta(known, origin_label=f"a published {record.kind.value} record")
    lacking = [key for key in missing if key not in ("host", "seed", "workload")]
    if lacking:
        notes.append(f"Run fields the record does not carry (stored as null): {', '.join(lacking)}.")
    meta["notes"] = " ".join(notes)  # the record states its own fields: no "set them" advice (overrides are refused)
    meta["source"] = "published"
    return ParsedRun(
        meta=meta,
        tables={},
        origin=f"{ORIGIN}-{record.kind.value}",
        file=display,
        content_sha256=content_sha256(data),
        strict=False,
        missing=missing,
        published=record,
        published_text=data.decode("utf-8-sig"),
    )


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def record_from_text(text: str, display: str = "stored record") -> PublishedRecord:
    """Re-read a stored record (the store keeps the file's text verbatim)."""
    return parse_record(text.encode("utf-8"), display)


def published_files(root: Path) -> list[Path]:
    """The records under a directory such as data/published/ (any depth), sorted."""
    return sorted(p for p in root.rglob("*.toml") if not any(part.startswith(".") for part in p.parts))
