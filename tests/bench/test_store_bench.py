"""Store budgets (DESIGN.md): ingest of a 1 M-row Parquet run ≤ 2 s; downsampled timeline over a 10 M-row samples
table ≤ 100 ms; runs list ≤ 20 ms. Medians over repeated runs, printed; run with ``make bench``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine.store import Store
from tests.support.run_bundles import make_bundle, run_tables

pytestmark = pytest.mark.bench


def _samples(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64) * 0.001
    return pa.table(
        {
            "t_s": t,
            "running": rng.integers(0, 256, n).astype(np.int32),
            "waiting": rng.integers(0, 256, n).astype(np.int32),
            "kv_usage": rng.uniform(0, 1, n),
            "prompt_tokens_total": np.cumsum(rng.integers(0, 50, n)),
            "generation_tokens_total": np.cumsum(rng.integers(0, 300, n)),
            "preemptions_total": np.cumsum(rng.random(n) < 0.001).astype(np.int64),
        }
    )


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_ingest_one_million_row_parquet_run(tmp_path: Path) -> None:
    tables = run_tables(num_requests=10_000, num_samples=10)
    tables["engine_samples"] = _samples(1_000_000)
    bundle = make_bundle(tmp_path / "in", "bench-1m", tables=tables)
    with Store(tmp_path / "ingest.duckdb") as store:

        def ingest() -> None:
            store.delete_run("bench-1m")
            assert store.ingest(bundle).runs[0].rows["engine_samples"] == 1_000_000

        median = _median_s(ingest, 5)
    print(f"\ningest of a 1 M-row Parquet run (+10k requests): median {median * 1000:.0f} ms (budget 2000 ms)")
    assert median <= 2.0


def test_timeline_over_ten_million_samples_and_runs_list(tmp_path: Path) -> None:
    with Store(tmp_path / "big.duckdb") as store:
        big = run_tables(num_requests=100, num_samples=10)
        big["engine_samples"] = _samples(10_000_000, seed=1)
        store.ingest(make_bundle(tmp_path / "in", "bench-10m", tables=big))
        for i in range(199):  # a realistic runs table around it
            store.ingest(make_bundle(tmp_path / "in", f"bench-small-{i:03d}", model_name=f"m{i % 7}"))
        assert store.table_counts()["engine_samples"] == 10_000_000 + 199 * 200

        def timeline() -> None:
            frame = store.timeline("bench-10m", max_points=1000)
            assert frame.group_by("series").len()["len"].max() <= 1000

        timeline_s = _median_s(timeline, 21)
        runs_s = _median_s(lambda: store.runs(), 51)
        filtered_s = _median_s(lambda: store.runs(model="m3", layout=(1, 1, 1), status="complete"), 51)
        summary_s = _median_s(lambda: store.measured_summary("bench-10m"), 5)
    print(f"\ntimeline of a 10 M-sample run, 1000 points/series: median {timeline_s * 1000:.1f} ms (budget 100 ms)")
    print(f"runs list, 200 runs: median {runs_s * 1000:.1f} ms; filtered {filtered_s * 1000:.1f} ms (budget 20 ms)")
    print(f"measured_summary of the 10 M-sample run: median {summary_s * 1000:.0f} ms (no budget)")
    assert timeline_s <= 0.100
    assert runs_s <= 0.020 and filtered_s <= 0.020
