"""``guidellm run`` itself against the session's vLLM CPU server, its report straight into the store.

Runs only where GuideLLM is installed in ``.venv-guidellm`` (``CLIFFSCOPE_GUIDELLM=1 scripts/install-test-deps.sh``):
its pins conflict with vLLM's, so the shared environment lacks it and the suite does not need it — the committed
reports it wrote (tests/support/tool_files/) are checked in tests/unit/test_tool_fixtures.py. Here the same
command the fixture script runs, synchronous profile, 6 requests: ~45 s of GuideLLM start-up and run when it runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from engine.store import Store
from tests.support.guidellm_report import check_against_guidellm
from tests.support.make_tool_fixtures import GUIDELLM, guidellm_command, guidellm_prompts

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not GUIDELLM.exists(), reason="GuideLLM is not in .venv-guidellm (CLIFFSCOPE_GUIDELLM=1)"),
]


def test_a_live_guidellm_report_lands_matching_its_own_figures(vllm_server, tmp_path: Path) -> None:
    prompts = guidellm_prompts(tmp_path / "prompts.jsonl")
    command = guidellm_command(vllm_server, prompts, tmp_path, "live", ("--profile", "kind=synchronous"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report_file = tmp_path / "live.json"
    (bench,) = json.loads(report_file.read_text())["benchmarks"]
    with Store(tmp_path / "live.duckdb") as store:
        (run,) = store.ingest(report_file).runs
        check_against_guidellm(store, run.run_id, bench, tpot_over_itl=1.10)
        assert store.run_meta(run.run_id)["name"] == "GuideLLM synchronous"
