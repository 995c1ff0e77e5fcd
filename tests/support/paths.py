"""Where the tests find the repository and the real files vLLM's own tools wrote (tool_files/README.md says how)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL_FILES = Path(__file__).resolve().parent / "tool_files"
