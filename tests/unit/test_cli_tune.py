"""`python -m engine plan --tune`: every layout at its own knee, with the documented JSON keys."""

import json

import pytest

from engine.__main__ import main

LAYOUT_KEYS = {
    "dp", "tp", "pp", "feasible", "recommended_max_num_seqs", "recommended_max_num_batched_tokens",
    "recommended_gpu_memory_utilization", "completion_s", "generation_tokens_per_s", "ttft_p99_s", "tpot_mean_s",
    "e2e_p99_s", "preemptions", "bound", "reason", "current_max_num_seqs", "current_completion_s",
    "current_generation_tokens_per_s", "current_preemptions", "gain_over_current", "predictions",
}  # fmt: skip
SMALL = ["--model", "8B", "--gpu-mem-gib", "24", "--max-model-len", "32768", "--gpus", "2", "--num-requests", "160"]


def test_plan_tune_json_ranks_each_layout_at_its_knee(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["plan", *SMALL, "--tune", "--cliff", "no-preemption", "--slo", "tpot=200ms", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert data["objective"] == "completion" and data["cliff_limit"] == 0.0
    assert data["slo"] == {"ttft_p99_s": None, "tpot_mean_s": 0.2, "e2e_p99_s": None}
    assert data["predictions"] == sum(r["predictions"] for r in data["layouts"]) > 0
    assert data["source"].startswith("predicted") and data["calibration"] == "defaults"
    layouts = data["layouts"]
    assert {(r["dp"], r["tp"], r["pp"]) for r in layouts} == {(2, 1, 1), (1, 2, 1), (1, 1, 2)}
    for r in layouts:
        assert set(r) == LAYOUT_KEYS
    feasible = [r for r in layouts if r["feasible"]]
    assert feasible and all(r["preemptions"] == 0 and r["tpot_mean_s"] <= 0.2 for r in feasible)
    times = [r["completion_s"] for r in feasible]
    assert times == sorted(times)
    assert all(r["bound"] in {"cliff", "slo", "batch", "kv-capacity", "bandwidth", "compute", "communication"}
               for r in feasible)  # fmt: skip


def test_plan_tune_text_names_the_setting_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", *SMALL, "--tune"]) == 0
    out = capsys.readouterr().out
    assert "each layout at its own knee" in out and "max_num_seqs" in out and "predictions in" in out
    assert "yours 1,024" in out


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [("--slo", "ttft=2s", "slo"), ("--slo", "tpot=fast", "slo tpot"), ("--cliff", "lots", "cliff"),
     ("--tune-also", "block_size", "tune-also")],
)  # fmt: skip
def test_bad_tune_flags_name_the_field(capsys: pytest.CaptureFixture[str], flag: str, value: str, field: str) -> None:
    assert main(["plan", *SMALL, "--tune", flag, value]) == 2
    assert f"error: {field}" in capsys.readouterr().err
