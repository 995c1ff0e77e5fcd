"""Every repository path the README and docs/*.md mention exists; they cite no file outside the repository and none
of cliffscope's own issue numbers.

A doc that points a reader at a file that was renamed, moved or never committed is a dead end; so is a path on the
machine a doc was written on (``/work/...``). What counts as a repository path: a token starting with one of the
repository's tracked top-level folders (``engine/``, ``tests/``, ``data/`` ...), cut at the first placeholder
(``data/models/<name>/config.json`` checks ``data/models/``) and matched as a glob when it has one
(``pages/views/*.py``); and a bare ``name.py`` in backticks, which must sit at the repository root or beside a path
cited earlier on its line (``engine/fidelity/calibrate.py``, ``steps.py``), unless it is another project's file named
in OTHER_PROJECTS_FILES.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# Paths the product or its user creates at run time: named in the docs, never committed.
WRITTEN_AT_RUN_TIME = {
    "data/cliffscope.duckdb": "the store the dashboard and `python -m engine import` create",
    "data/inbox": "the collectors' drop folder, created by `--inbox data/inbox`",
    "engine/__pycache__": "numba's cache of the compiled simulator loop",
    ".streamlit/secrets.toml": "the user's own upload secret, kept out of git",
}
# Files of other projects the docs name bare (their path is given elsewhere on the line or is vLLM's).
OTHER_PROJECTS_FILES = {"kv_cache_manager.py", "benchmark_serving.py"}
PLACEHOLDER = re.compile(r"[<{\[]|\.\.\.|…")
MACHINE_PATH = re.compile(r"(?<![\w.~-])/work/[\w./-]+")
# cliffscope's own tracker: its issue numbers are not documentation (vLLM's "PR #12369", "vllm#10517" are sources).
OWN_ISSUE = re.compile(r"(?<!vLLM )(?<!vllm )\bissues? #\d+", re.IGNORECASE)
BARE_PY = re.compile(r"`([\w-]+\.py)\b")


def _top_level_folders() -> list[str]:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return sorted({line.split("/")[0] for line in tracked.stdout.splitlines() if "/" in line})


TOP_LEVEL = "|".join(re.escape(top) for top in _top_level_folders())
REPO_PATH = re.compile(rf"(?<![\w./~:@-])((?:{TOP_LEVEL})/[^\s`'\"()\],;|]*)")


def _cited(path: str) -> str:
    """The part of a cited path that must exist: up to the first placeholder, without trailing punctuation."""
    match = PLACEHOLDER.search(path)
    if match:
        path = path[: match.start()].rsplit("/", 1)[0] + "/"
    return path.rstrip(".:").rstrip("/") or path


def _exists(path: str) -> bool:
    if path in WRITTEN_AT_RUN_TIME:
        return True
    if any(ch in path for ch in "*?"):
        return any(REPO_ROOT.glob(path))
    return (REPO_ROOT / path).exists()


def _missing_in(text: str, name: str) -> list[str]:
    missing = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{name}:{number}"
        cited = [_cited(m.group(1)) for m in REPO_PATH.finditer(line)]
        missing += [f"{where}: {path}" for path in cited if not _exists(path)]
        missing += [
            f"{where}: {m.group(0)} (a path on one machine, not in the repository)" for m in MACHINE_PATH.finditer(line)
        ]
        missing += [
            f"{where}: {m.group(0)} (cliffscope's own tracker, not a reference)" for m in OWN_ISSUE.finditer(line)
        ]
        folders = [REPO_ROOT] + [(REPO_ROOT / path).parent for path in cited]
        for module in BARE_PY.findall(line):
            if module not in OTHER_PROJECTS_FILES and not any((folder / module).exists() for folder in folders):
                missing.append(f"{where}: {module}")
    return missing


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_path_a_doc_mentions_exists_and_no_issue_is_cited(doc: Path) -> None:
    assert _missing_in(doc.read_text(), str(doc.relative_to(REPO_ROOT))) == []


def test_the_check_sees_a_missing_path() -> None:
    """The check itself can fail: a doc citing a moved file, a machine path and a stray module is caught."""
    text = (
        "See `engine/no_such_module.py` and tests/integration/store_fixtures/README.md,\n"
        "run /work/main/.venv/bin/python, read `engine/fidelity/calibrate.py`, `steps.py` and `ghost.py`.\n"
        "As issue #11 asked (vLLM issue #9000 and PR #12369 are sources).\n"
        "Fine: `data/models/<name>/config.json`, pages/views/*.py, `kv_cache_manager.py`, data/cliffscope.duckdb.\n"
    )
    missing = _missing_in(text, "fake.md")
    assert [m.split(": ", 1)[1] for m in missing] == [
        "engine/no_such_module.py",
        "tests/integration/store_fixtures/README.md",
        "/work/main/.venv/bin/python (a path on one machine, not in the repository)",
        "ghost.py",
        "issue #11 (cliffscope's own tracker, not a reference)",
    ]
