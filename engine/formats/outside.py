"""Run metadata for files that are not bundles: store what the format knows, null the rest, say what is missing.

A vLLM bench JSON knows the model and the request list but not the device or the scheduler limits; a Prometheus
scrape knows the block size and KV blocks but not the workload. The run's ``notes`` name the missing parameters so
that the dashboard can say why a prediction of such a run needs them filled in (upload page, or ``--meta KEY=VALUE``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from engine.bundle import BUNDLE_VERSION, RUN_FIELDS

# Fields an outside run cannot lack in a useful way are still allowed to be missing; these are the ones worth
# naming in the notes because the engine needs them to predict the run.
PREDICTION_FIELDS = (
    "device",
    "num_devices",
    "model_config",
    "dtype",
    "kv_cache_dtype",
    "dp",
    "tp",
    "pp",
    "max_num_seqs",
    "max_num_batched_tokens",
    "block_size",
    "max_model_len",
    "kv_capacity_tokens",
    "workload",
    "seed",
)


def content_sha256(data: bytes, part: str = "") -> str:
    digest = hashlib.sha256(data)
    if part:
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()


def safe_id_part(text: str, limit: int = 40) -> str:
    """A piece of text reduced to run-id characters (letters, digits, '-', '_', '.')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    return cleaned[:limit] or "x"


def outside_meta(known: Mapping[str, Any], *, origin_label: str, notes: list[str] | None = None) -> tuple[dict, list]:
    """Complete run metadata from what a format ``known``s; returns (meta, missing field names)."""
    meta: dict[str, Any] = {key: None for key in RUN_FIELDS}
    meta.update({"bundle_version": BUNDLE_VERSION, "source": "upload", "status": "complete"})
    meta.update({key: value for key, value in known.items() if value is not None})
    missing = [key for key, (_types, required, _m) in RUN_FIELDS.items() if required and meta.get(key) is None]
    lines = [f"Imported from {origin_label}."]
    lacking = [key for key in PREDICTION_FIELDS if meta.get(key) is None]
    if lacking:
        lines.append(f"Not in this format (stored as null; set them to predict this run): {', '.join(lacking)}.")
    lines.extend(notes or [])
    meta["notes"] = " ".join(lines) if meta.get("notes") is None else f"{meta['notes']} " + " ".join(lines)
    return meta, missing


def coerce_meta_value(key: str, text: str) -> Any:
    """Turn ``KEY=VALUE`` text (vLLM bench --metadata, the CLI's --meta) into the run field's type."""
    types = RUN_FIELDS[key][0]
    if bool in types:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key}={text!r}: expected true or false")
    if int in types and float not in types:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{key}={text!r}: expected a whole number") from None
    if float in types:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{key}={text!r}: expected a number") from None
    if dict in types:
        raise ValueError(f"{key} is an object; it cannot be set as KEY=VALUE")
    return text
