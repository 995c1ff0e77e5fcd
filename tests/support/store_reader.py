"""A reader process for the multi-process store test: read the store in a loop for a while, report as JSON.

``python -m tests.support.store_reader DB SECONDS SEED`` opens the database as the CLI does (shared), prints
``reading``, and until SECONDS have passed (and at least 5 times) lists the runs and reads one run's summary,
timeline and requests, checking they agree. Then prints {"reads": n, "errors": [...], "runs_seen": max}.
"""

from __future__ import annotations

import json
import random
import sys
import time


def main(db: str, seconds: float, seed: int) -> None:
    from engine.commands import open_cli_store

    rng = random.Random(seed)
    reads, errors, runs_seen = 0, [], 0
    with open_cli_store(db) as store:
        print("reading", flush=True)  # the test waits for this line from every reader before it writes
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline or reads + len(errors) < 5:
            try:
                runs = store.runs()
                runs_seen = max(runs_seen, runs.height)
                run_id, expected = rng.choice(list(zip(runs["run_id"], runs["requests_rows"], strict=True)))
                summary = store.measured_summary(run_id)
                assert summary is not None and summary["num_requests"] == expected, (run_id, summary)
                assert store.requests(run_id).height == expected
                store.timeline(run_id, max_points=200)
                reads += 1
            except Exception as exc:  # reported, never raised: the test counts them
                errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(rng.uniform(0.0, 0.2))
    print(json.dumps({"reads": reads, "errors": errors[:5], "runs_seen": runs_seen}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
