"""Collector overhead: the same real vLLM job with telemetry on (vLLM stats + the collector's per-step recording)
and off (vLLM stats disabled, nothing recorded), alternated on two started engines (the order flips every round).

The budget is checked on the ratio of the fastest runs: on a shared host, contention only ever adds time, so the
minimum is the least disturbed estimate of each; the ratio of medians is printed beside it."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from collectors.job import EngineSession, drive_batch, plan_requests
from collectors.spec import EngineParams, JobSpec

pytestmark = [pytest.mark.bench, pytest.mark.vllm, pytest.mark.timeout(600)]
BUDGET_RATIO = 1.02
ROUNDS = 5


def test_collector_overhead_ratio(tmp_path: Path) -> None:
    params = EngineParams(model="tiny-llama-4l", max_num_seqs=32, kv_cache_memory_bytes=32 << 20, max_model_len=512)
    job = JobSpec(name="bench-overhead", engine=params, num_requests=64, workload="fixed:32,256")
    plan = plan_requests(job)
    on_s: list[float] = []
    off_s: list[float] = []
    with EngineSession(params, log_stats=True) as sampled, EngineSession(params, log_stats=False) as bare:
        for i in range(ROUNDS):
            for run_sampled in (True, False) if i % 2 == 0 else (False, True):
                if run_sampled:
                    spec = JobSpec(name=f"bench-on-{i}", engine=params, num_requests=64, workload="fixed:32,256")
                    result = sampled.run(spec, tmp_path / "inbox")
                    assert result.status == "complete"
                    on_s.append(result.wall_s)
                else:
                    t0_wall, t0_mono = time.time(), time.monotonic()
                    off_s.append(drive_batch(bare.engine, plan, bare.vocab_size, job.seed, t0_wall, t0_mono))
    ratio = min(on_s) / min(off_s)
    median_ratio = statistics.median(on_s) / statistics.median(off_s)
    print(
        f"\ncollector overhead over {ROUNDS} rounds: fastest sampled {min(on_s):.3f} s vs bare {min(off_s):.3f} s, "
        f"ratio {ratio:.3f} (budget {BUDGET_RATIO}); medians {statistics.median(on_s):.3f} / "
        f"{statistics.median(off_s):.3f} s, ratio {median_ratio:.3f}"
    )
    assert ratio <= BUDGET_RATIO
