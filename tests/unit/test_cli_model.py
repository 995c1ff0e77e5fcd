import json
import subprocess
import sys

import polars as pl
import pytest

from engine.__main__ import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_kv_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "kv", "--model", "DeepSeek-R1-Distill-Qwen-32B", "--gpu", "H200", "--tp", "2", "--json")
    data = json.loads(out)
    assert rc == 0 and data["kv_bytes_per_token"] == 262_144 and data["feasible"] is True
    for key in ("weights_bytes_per_device", "kv_capacity_tokens", "kv_blocks", "max_concurrency", "reason"):
        assert key in data


def test_kv_infeasible_still_reports(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "kv", "--model", "405B", "--json")
    data = json.loads(out)
    assert rc == 0 and data["feasible"] is False and "weights" in data["reason"]
    assert data["kv_bytes_per_token"] == 516_096


def test_predict_json_and_timeline(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    path = tmp_path / "tl.parquet"
    rc, out, _ = run(
        capsys,
        "predict",
        "--model",
        "8B",
        "--num-requests",
        "50",
        "--workload",
        "fixed:100,300",
        "--timeline",
        str(path),
        "--json",
    )
    data = json.loads(out)
    assert rc == 0 and data["cliff_onset_s"] is None and data["preemptions"] == 0
    for key in ("completion_s", "peak_running", "ttft_mean_s", "tpot_mean_s", "e2e_mean_s", "e2e_p99_s"):
        assert isinstance(data[key], int | float)
    assert pl.read_parquet(path).height > 0


def test_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(
        capsys, "plan", "--model", "8B", "--gpus", "2", "--num-requests", "40", "--workload", "fixed:100,200", "--json"
    )
    data = json.loads(out)
    assert rc == 0 and len(data["layouts"]) == 3
    assert {"dp", "tp", "pp", "feasible", "completion_s", "reason"} <= set(data["layouts"][0])
    times = [x["completion_s"] for x in data["layouts"] if x["feasible"]]
    assert times == sorted(times)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["kv", "--tp", "x"], "tp"),
        (["kv", "--gpu", "nope"], "gpu"),
        (["kv", "--model", "nope"], "model"),
        (["predict", "--workload", "zipf"], "workload"),
        (["kv", "--gpu-memory-utilization", "1.5"], "gpu_memory_utilization"),
    ],
)
def test_bad_input_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], field: str) -> None:
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and field in err


def test_python_dash_m_exit_code() -> None:
    proc = subprocess.run([sys.executable, "-m", "engine", "kv", "--tp", "x"], capture_output=True, text=True)
    assert proc.returncode == 2 and "tp" in proc.stderr and "Traceback" not in proc.stderr
