"""Attach overhead and scrape interval: one test server (tests/support/vllm_server.py), the same 24-request batch
attached four times, scraping every 0.25 s vs effectively never (A B A B); prints each run's generation throughput
(the server's own counter over the client's wall time) and scrape gaps. Run under the heavy lock:
``flock /tmp/cliffscope-heavy.lock .venv/bin/python scripts/measure_attach_overhead.py``."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
INTERVALS = ("0.25", "3600", "0.25", "3600")  # 3600 s: only the scrapes before the first and after the last request


def attach_once(url: str, inbox: pathlib.Path, interval: str, name: str) -> dict[str, object]:
    command = [
        *(sys.executable, "-m", "collectors", "attach", "--url", url, "--device", "cpu"),
        *("--max-num-seqs", "16", "--max-num-batched-tokens", "512", "--workload", "fixed:32,128"),
        *("--num-requests", "24", "--scrape-interval", interval, "--inbox", str(inbox), "--name", name, "--quiet"),
    ]
    subprocess.run(command, cwd=REPO, check=True)
    bundle = next(p for p in inbox.iterdir() if (p / "run.json").is_file())
    collector = json.loads((bundle / "run.json").read_text())["collector"]
    rise = collector["server_counter_rise"]
    return {
        "scrape_interval_s": interval,
        "wall_s": collector["wall_s"],
        "generated_tokens_per_s": round(rise["generation_tokens_total"] / collector["wall_s"], 1),
        "preemptions": rise["num_preemptions_total"],
        "scrapes": collector["scrapes"],
        "scrape_gap_s": collector["scrape_gap_s"],
    }


def main() -> None:
    sys.path.insert(0, str(REPO))
    from tests.support.vllm_server import ServerConfig, start_vllm_server

    work = pathlib.Path(tempfile.mkdtemp(prefix="attach-overhead-"))
    results = []
    with start_vllm_server(work / "server", ServerConfig()) as server:
        for i, interval in enumerate(INTERVALS):
            results.append(attach_once(server.url, work / f"inbox{i}", interval, f"overhead{i}"))
            print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
