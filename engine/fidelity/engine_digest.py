"""A fingerprint of the engine that scored a report: its source files and the catalogs it sizes models with.

The published-runs report (``data/published/fidelity-report.json``) takes minutes to compute, so the dashboard and
``validate`` read the exported file. A report is only the engine's when it was computed by *this* engine: a change
to the step model, the memory rules or the simulator changes every figure in it. The records' digest alone cannot
see that, so the report carries this fingerprint too and is recomputed (or refused as stale by the test that guards
the shipped file) when either differs.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

ENGINE_DIR = Path(__file__).resolve().parents[1]
DATA_DIR = ENGINE_DIR.parent / "data"


def fingerprinted_files() -> list[Path]:
    """Every file whose content can move a published figure: the engine's Python sources, the GPU catalog and the
    models' configs. Sorted by path so the fingerprint does not depend on the file system's listing order."""
    files = [p for p in ENGINE_DIR.rglob("*.py") if "__pycache__" not in p.parts]
    files += [DATA_DIR / "gpus.toml", *DATA_DIR.glob("models/*/config.json")]
    return sorted(p for p in files if p.is_file())


@lru_cache(maxsize=1)
def engine_digest() -> str:
    """SHA-256 (16 hex digits) over the relative path and bytes of each fingerprinted file."""
    root = ENGINE_DIR.parent
    h = hashlib.sha256()
    for path in fingerprinted_files():
        h.update(str(path.relative_to(root)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]
