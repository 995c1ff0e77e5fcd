"""Readers for outside telemetry formats (vLLM bench JSON, Prometheus text/JSON, CSV/JSONL/Parquet, bundles).

``read_path`` picks the reader from the file's content (and extension where content is ambiguous) and returns one
``ParsedRun`` per run in the file; ``validate_run`` checks each before the store writes anything.
"""

from engine.formats.detect import read_path
from engine.formats.model import DEFAULT_LIMITS, Limits, ParsedRun, Problem, ValidationError
from engine.formats.validate import validate_run

__all__ = ["DEFAULT_LIMITS", "Limits", "ParsedRun", "Problem", "ValidationError", "read_path", "validate_run"]
