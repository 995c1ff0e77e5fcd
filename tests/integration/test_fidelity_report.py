"""The report's numbers for two tiny runs, checked by hand.

The calibration makes every step last exactly 10 ms (bandwidth and FLOPS effectively infinite, no per-sequence or
per-layer cost), so the engine's timeline can be worked out on paper:

run "hand-a": 2 requests of 32 prompt + 4 output tokens, max_num_seqs 2 -> step 1 prefills both and emits their
first tokens (t = 0.01 s), steps 2..4 decode; both finish at 0.04 s. TTFT 0.01, TPOT (0.04-0.01)/3 = 0.01,
E2E 0.04, completion 0.04. Measured (typed in below): TTFT 0.0125, finish 0.05 -> TPOT 0.0125. Every error -20 %.

run "hand-b": 4 requests of 32 + 2, max_num_seqs 4 -> first tokens at 0.01, finish at 0.02. Measured: TTFT 0.008,
finish 0.025 -> TPOT 0.017. Errors: TTFT +25 %, E2E -20 %, TPOT (0.01-0.017)/0.017 = -41.18 %, completion -20 %.
vLLM's count of KV tokens is typed in as 500 where the engine says 512 (1 MiB / 2,048 B per token): +2.4 %.

Summary: TTFT MAPE (20+25)/2 = 22.5 %, E2E MAPE 20 %, TPOT MAPE (20+41.18)/2 = 30.59 %, completion median 20 %,
KV max 2.4 %; no cliff on either side.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine.bundle import write_bundle
from engine.fidelity.calibrate import HeldOut
from engine.fidelity.report import compare_run, series_errors, summarize
from engine.fidelity.runs import load_case
from engine.perf import Calibration
from engine.simulate import predict
from engine.store import Store
from tests.support.synthetic_runs import SyntheticRun, meta_for

TEN_MS = Calibration(
    mem_efficiency=1e12,
    compute_efficiency=1e12,
    step_overhead_s=0.01,
    per_seq_overhead_s=0.0,
    layer_overhead_s=0.0,
    source="hand-check: 10 ms per step",
)


def _bundle(inbox: Path, run_id: str, n: int, osl: int, ttft: float, finish: float, kv_tokens: int) -> Path:
    meta = meta_for(SyntheticRun(run_id, 32, osl, n, n, kv_cache_memory_bytes=1 << 20))
    meta["kv_capacity_tokens"] = kv_tokens
    meta["max_model_len"] = 256
    requests = pa.table(
        {
            "request_id": [f"q{i}" for i in range(n)],
            "isl": np.full(n, 32, dtype=np.int32),
            "osl": np.full(n, osl, dtype=np.int32),
            "output_tokens": np.full(n, osl, dtype=np.int32),
            "arrival_s": np.zeros(n),
            "first_scheduled_s": np.zeros(n),
            "first_token_s": np.full(n, ttft),
            "finished_s": np.full(n, finish),
            "num_preemptions": np.zeros(n, dtype=np.int32),
        }
    )
    t = np.array([0.0, ttft, finish])
    samples = pa.table(
        {
            "t_s": t,
            "running": np.array([n, n, 0], dtype=np.int32),
            "waiting": np.zeros(3, dtype=np.int32),
            "kv_usage": np.array([0.0, 0.25, 0.0]),
            "prompt_tokens_total": np.array([0, 32 * n, 32 * n]),
            "generation_tokens_total": np.array([0, n, n * osl]),
            "preemptions_total": np.zeros(3, dtype=np.int64),
        }
    )
    return write_bundle(inbox, meta, {"requests": requests, "engine_samples": samples})


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("hand")
    with Store(root / "hand.duckdb") as store:
        store.ingest(_bundle(root / "inbox", "hand-a", 2, 4, 0.0125, 0.05, 512))
        store.ingest(_bundle(root / "inbox", "hand-b", 4, 2, 0.008, 0.025, 500))
        rows = []
        for run_id in ("hand-a", "hand-b"):
            case = load_case(store, run_id)
            prediction = predict(case.scenario, case.lengths, TEN_MS)
            rows.append(compare_run(case, prediction, HeldOut(run_id, TEN_MS, 1, 2, ["other"])))
    return {"runs": {r["run_id"]: r for r in rows}, "summary": summarize(rows)}


def test_engine_side_is_what_the_paper_calculation_says(report: dict) -> None:
    a = report["runs"]["hand-a"]["figures"]
    assert math.isclose(a["ttft_mean_s"]["predicted"], 0.01, rel_tol=1e-6)
    assert math.isclose(a["tpot_mean_s"]["predicted"], 0.01, rel_tol=1e-6)
    assert math.isclose(a["e2e_mean_s"]["predicted"], 0.04, rel_tol=1e-6)
    assert math.isclose(a["completion_s"]["predicted"], 0.04, rel_tol=1e-6)
    b = report["runs"]["hand-b"]["figures"]
    assert math.isclose(b["completion_s"]["predicted"], 0.02, rel_tol=1e-6)
    assert a["kv_capacity_tokens"]["predicted"] == 512


def test_per_run_errors(report: dict) -> None:
    a = report["runs"]["hand-a"]["figures"]
    for figure in ("ttft_mean_s", "tpot_mean_s", "e2e_mean_s", "completion_s", "ttft_p99_s", "e2e_p50_s"):
        assert math.isclose(a[figure]["err"], -0.2, rel_tol=1e-5), figure
    assert a["kv_capacity_tokens"]["err"] == 0.0
    b = report["runs"]["hand-b"]["figures"]
    assert math.isclose(b["ttft_mean_s"]["err"], 0.25, rel_tol=1e-5)
    assert math.isclose(b["e2e_mean_s"]["err"], -0.2, rel_tol=1e-5)
    assert math.isclose(b["tpot_mean_s"]["err"], (0.01 - 0.017) / 0.017, rel_tol=1e-5)
    assert math.isclose(b["kv_capacity_tokens"]["err"], 12 / 500)
    assert b["cliff_onset_s"] == {"predicted": None, "measured": None, "err": None}
    assert b["preemptions"]["predicted"] == 0 and b["preemptions"]["measured"] == 0
    # First step: scheduled at 0, first token at the measured TTFT vs the engine's 10 ms step.
    assert math.isclose(a["first_step_s"]["measured"], 0.0125) and math.isclose(a["first_step_s"]["err"], -0.2)
    assert math.isclose(b["first_step_s"]["err"], 0.25, rel_tol=1e-6)


def test_summary(report: dict) -> None:
    s = report["summary"]
    assert s["held_out_runs"] == 2
    assert math.isclose(s["ttft_mape"], 0.225, rel_tol=1e-5)
    assert math.isclose(s["e2e_mape"], 0.2, rel_tol=1e-5)
    assert math.isclose(s["tpot_mape"], (0.2 + 0.007 / 0.017) / 2, rel_tol=1e-5)
    assert math.isclose(s["completion_err_median"], 0.2, rel_tol=1e-5)
    assert math.isclose(s["kv_capacity_err_max"], 0.024)
    assert math.isclose(s["first_step_err_median"], 0.225, rel_tol=1e-5)
    assert s["queue_abs_err_median_s"] == 0.0  # nobody queued on either side
    assert s["cliff_onset_err_median"] is None and s["cliff_presence_mismatches"] == 0
    assert s["targets"]["kv_capacity_err_max"]["met"] is True
    assert s["targets"]["tpot_mape"]["met"] is False and s["targets"]["cliff_onset_err_median"]["met"] is None
    assert any("TPOT" in m and "hand-b" in m for m in s["misses"])
    assert s["worst_runs"][0] == "hand-b"
    # Every run lands in a regime (an empty breakdown must fail), and both hand runs are unsaturated.
    assert s["by_regime"] and set(s["by_regime"]) <= {"compute-bound", "bandwidth-bound"}
    assert sum(g["runs"] for g in s["by_regime"].values()) == 2


def test_series_errors_are_zero_for_identical_series_and_see_an_offset(report: dict) -> None:
    import polars as pl

    t = np.linspace(0, 10, 50)
    gen = np.cumsum(np.full(50, 100.0)) - 100
    samples = pl.DataFrame(
        {"t_s": t, "running": np.full(50, 8), "kv_usage": np.full(50, 0.5), "generation_tokens_total": gen}
    )
    predicted = pl.DataFrame(
        {
            "t_s": t,
            "running": np.full(50, 8),
            "kv_usage": np.full(50, 0.6),
            "generation_tokens_per_s": np.concatenate([[0.0], np.diff(gen) / np.diff(t)]),
        }
    )
    errs = series_errors(samples, predicted)
    assert math.isclose(errs["kv_usage"]["err"], 0.1, abs_tol=1e-9)
    assert errs["running"]["err"] == 0.0
    assert errs["generation_tokens_per_s"]["err"] < 1e-6
