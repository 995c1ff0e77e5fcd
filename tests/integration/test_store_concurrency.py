"""8 reader threads and 1 ingest at once on one Store (as the dashboard does): 0 errors, 0 lost rows, and no
reader ever sees a run without all of its rows."""

from __future__ import annotations

import random
import threading
from pathlib import Path

from engine.store import Store
from tests.support.run_bundles import make_bundle, run_tables

READERS = 8
INGESTS = 16


def test_eight_readers_one_ingest(tmp_path: Path) -> None:
    bundles = [
        make_bundle(
            tmp_path / "in", f"conc-{i:02d}", tables=run_tables(num_requests=20 + i, num_samples=5000 + 100 * i, seed=i)
        )
        for i in range(INGESTS)
    ]
    errors: list[BaseException] = []
    reads = [0] * READERS
    done = threading.Event()

    with Store(tmp_path / "conc.duckdb") as store:
        store.ingest(make_bundle(tmp_path / "seed", "seed-0"))

        def reader(index: int) -> None:
            rng = random.Random(index)
            try:
                while not done.is_set() or reads[index] < 5:
                    runs = store.runs()
                    run_id, expected = rng.choice(list(zip(runs["run_id"], runs["requests_rows"], strict=True)))
                    choice = rng.randrange(4)
                    if choice == 0:
                        assert store.requests(run_id).height == expected
                    elif choice == 1:
                        assert store.measured_summary(run_id)["num_requests"] == expected
                    elif choice == 2:
                        timeline = store.timeline(run_id, max_points=200)
                        assert set(timeline["series"].unique()) >= {"running", "kv_usage", "preemptions_total"}
                    else:
                        assert store.request_lengths(run_id).shape == (expected, 2)
                    reads[index] += 1
            except BaseException as exc:  # any failure in a thread fails the test
                errors.append(exc)

        def ingester() -> None:
            try:
                for bundle in bundles:
                    assert store.ingest(bundle).runs[0].action == "added"
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
        threads.append(threading.Thread(target=ingester))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)

        assert not errors, errors[:3]
        assert all(n >= 5 for n in reads)
        counts = store.table_counts()
        assert counts["runs"] == INGESTS + 1
        assert counts["requests"] == 32 + sum(20 + i for i in range(INGESTS))
        assert counts["engine_samples"] == 200 + sum(5000 + 100 * i for i in range(INGESTS))
