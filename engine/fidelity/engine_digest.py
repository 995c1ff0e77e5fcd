"""A fingerprint of the engine that scored a report: the code that computes its figures and the catalogs it sizes
models with.

The published-runs report (``data/published/fidelity-report.json``) takes minutes to compute, so the dashboard and
``validate`` read the exported file. A report is only the engine's when it was computed by *this* engine: a change
to the step model, the memory rules or the simulator changes every figure in it. The records' digest alone cannot
see that, so the report carries this fingerprint too and is recomputed (or refused as stale by the test that guards
the shipped file) when either differs.

The fingerprint reads each module's syntax tree without its docstrings, so a comment, a docstring or a reformat
does not make the shipped report stale, while any change to what the code does does. Modules that cannot move a
published figure (the store, the CLI, the readers of other formats, the knee finder, the planner) are left out.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

ENGINE_DIR = Path(__file__).resolve().parents[1]
DATA_DIR = ENGINE_DIR.parent / "data"
NOT_SCORING = ("store", "commands", "formats", "knee.py", "knee_fidelity.py", "planner.py", "objectstore.py",
               "bundle.py", "window_jit.py", "__main__.py")  # fmt: skip
SCORING_FORMATS = ("published.py", "published_schema.py", "model.py")  # the record parser and its types


def fingerprinted_files() -> list[Path]:
    """Every file whose content can move a published figure: the engine's scoring modules, the GPU catalog and the
    models' configs. Sorted by path so the fingerprint does not depend on the file system's listing order."""
    files = []
    for path in ENGINE_DIR.rglob("*.py"):
        parts = path.relative_to(ENGINE_DIR).parts
        if "__pycache__" in parts:
            continue
        scoring_format = parts[0] == "formats" and parts[-1] in SCORING_FORMATS
        if scoring_format or parts[0] not in NOT_SCORING:
            files.append(path)
    files += [DATA_DIR / "gpus.toml", *DATA_DIR.glob("models/*/config.json")]
    return sorted(p for p in files if p.is_file())


def _code_of(path: Path) -> bytes:
    """A Python module's syntax tree without docstrings (comments and layout are not in the tree); other files as
    they are."""
    if path.suffix != ".py":
        return path.read_bytes()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False).encode()


@lru_cache(maxsize=1)
def engine_digest() -> str:
    """SHA-256 (16 hex digits) over the relative path and code of each fingerprinted file."""
    root = ENGINE_DIR.parent
    h = hashlib.sha256()
    for path in fingerprinted_files():
        h.update(str(path.relative_to(root)).encode())
        h.update(b"\0")
        h.update(_code_of(path))
        h.update(b"\0")
    return h.hexdigest()[:16]
