"""What every reader returns, and how bad input is reported.

A reader turns one file into one or more ``ParsedRun`` (run metadata + Arrow tables in the bundle's column names);
``engine.formats.validate`` then checks it against ``engine.bundle`` before the store writes anything. Problems are
collected as ``Problem`` records naming the file, row, column and the fix, so a user can correct the file in one go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class Limits:
    """Size and row limits for one ingest. The defaults are safe for a laptop and far above a real run's size."""

    max_file_bytes: int = 2 * 1024**3  # one input file (or the sum of a bundle's files)
    max_rows: int = 50_000_000  # rows in one table of one run
    max_runs_per_file: int = 256  # e.g. DP engines in one Prometheus scrape, or --append-result objects
    max_time_s: float = 30 * 24 * 3600.0  # times are seconds since the run's start: a month is surely wrong
    max_tokens: int = 10_000_000  # one request's prompt or output length
    max_zip_members: int = 64
    max_decompressed_bytes: int = 2 * 1024**3  # what a .gz/.zst/.zip unpacks to, checked while unpacking (bombs)
    max_json_bytes: int = 512 * 1024**2  # JSON is parsed in memory: keep it bounded


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file. ``row`` is 1-based over data rows (the header is not a row)."""

    file: str
    message: str
    fix: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}; fix: {self.fix}"


class ValidationError(ValueError):
    """An input file that cannot be ingested. ``problems`` lists everything found; ``str()`` is one line."""

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("ValidationError needs at least one problem")
        self.problems = list(problems)
        first = str(self.problems[0])
        more = len(self.problems) - 1
        super().__init__(first if more == 0 else f"{first} (and {more} more problem{'s' if more > 1 else ''})")

    @property
    def file(self) -> str:
        return self.problems[0].file

    @classmethod
    def one(
        cls, file: str, message: str, fix: str, *, row: int | None = None, column: str | None = None
    ) -> ValidationError:
        return cls([Problem(file=file, message=message, fix=fix, row=row, column=column)])


@dataclass
class ParsedRun:
    """One run read from an input file, before validation.

    ``meta`` uses run.json's keys (``engine.bundle.RUN_FIELDS``); ``tables`` maps bundle table names to Arrow tables
    with bundle column names (types are checked and cast by the validator). ``strict`` runs (bundles) must carry every
    required run field; outside formats may lack some, which are stored as null and listed in ``missing``.
    """

    meta: dict[str, Any]
    tables: dict[str, pa.Table]
    origin: str  # the reader: bundle, vllm-bench-json, prometheus-text, prometheus-query-range, plain-csv, ...
    file: str  # display name of the source (never used as a path or in SQL)
    content_sha256: str  # identity of the input, for idempotent re-ingest
    strict: bool = True
    missing: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # run.json keys this version does not know
    # Published records (engine.formats.published): the typed record and the file's text, stored verbatim beside
    # the run so that its source, quotes and stated/unstated flags travel with it.
    published: Any = None
    published_text: str | None = None
