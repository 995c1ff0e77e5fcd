"""`python -m engine import --prometheus URL --start T0 --end T1`: a real Prometheus (Debian's package) scraping the
session's real vLLM CPU server every 0.5 s while a short batch runs; the window lands as one run whose counters match
what the server itself reported, and importing it again writes nothing."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.store import Store
from tests.support.vllm_server import REPO_ROOT, VllmServer, free_port, stop_process_group

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed"),
]


@pytest.fixture(scope="module")
def prometheus_url(vllm_server: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus on 127.0.0.1 scraping the vLLM server every 0.5 s (its own config and data folder)."""
    work = tmp_path_factory.mktemp("prometheus")
    target = urllib.parse.urlsplit(vllm_server.url).netloc
    (work / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
        f"scrape_configs:\n  - job_name: vllm\n    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    command = ["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    with (work / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while _up(url) != 1.0:  # ready, and has scraped vLLM at least once
            assert proc.poll() is None and time.monotonic() < deadline, (work / "prometheus.log").read_text()[-2000:]
            time.sleep(0.25)
        yield url
    finally:
        stop_process_group(proc)


def _up(url: str) -> float | None:
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?query=up", timeout=2) as response:
            result = json.loads(response.read())["data"]["result"]
    except (OSError, ValueError, KeyError):
        return None
    return float(result[0]["value"][1]) if result else None


def _counter(server: VllmServer, name: str) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


# The batch spans several scrapes: at 12 × 96 tokens it once ran inside about one 0.5 s interval, and the import's
# 0.5 s grid, which reads the latest scrape at each step, missed the one busy scrape between two jittered ones.
NUM_REQUESTS, MAX_TOKENS = 24, 144  # prompt (~75 tokens) + output within the server's max_model_len of 256


def _complete(server: VllmServer, index: int) -> int:
    body = {"model": server.served_model_name, "prompt": " ".join(f"w{i + index}" for i in range(24)),
            "max_tokens": MAX_TOKENS, "ignore_eos": True, "temperature": 0}  # fmt: skip
    request = urllib.request.Request(server.url + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as response:
        return int(json.loads(response.read())["usage"]["completion_tokens"])


def test_a_live_window_lands_as_one_run_matching_the_servers_counters(
    vllm_server: VllmServer, prometheus_url: str, tmp_path: Path
) -> None:
    time.sleep(1.5)  # a few idle scrapes before the batch
    generated_before = _counter(vllm_server, "vllm:generation_tokens_total")
    t0 = time.time() - 1.0
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        completion_tokens = sum(pool.map(lambda i: _complete(vllm_server, i), range(NUM_REQUESTS)))
    time.sleep(2.0)  # idle scrapes after it
    t1 = time.time()
    generated = _counter(vllm_server, "vllm:generation_tokens_total") - generated_before
    assert generated == completion_tokens == NUM_REQUESTS * MAX_TOKENS

    db = tmp_path / "live.duckdb"
    window = ["--start", f"{t0:.3f}", "--end", f"{t1:.3f}", "--step", "0.5"]
    command = [sys.executable, "-m", "engine", "import", "--prometheus", prometheus_url, *window,
               "--selector", 'job="vllm"', "--db", str(db), "--json"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    (landed,) = json.loads(result.stdout)["landed"]
    (run,) = landed["runs"]
    # The import keeps the busy scrapes and one idle scrape on each side (engine.formats.prometheus._busy_window):
    # at least three rows however fast this host runs the batch (CI once saw it inside one 0.5 s step).
    assert run["action"] == "added" and run["rows"]["engine_samples"] >= 3
    with Store(db) as store:
        samples = store.engine_samples(run["run_id"])
        meta = store.run_meta(run["run_id"])
        summary = store.measured_summary(run["run_id"])
    assert samples["running"].max() >= 1
    # Counters are sampled at 0.5 s steps: the window's rise is the server's own count of the batch's tokens.
    rise = samples["generation_tokens_total"].max() - samples["generation_tokens_total"].min()
    assert rise == generated
    assert meta["model_name"] == vllm_server.served_model_name and meta["block_size"] == vllm_server.config.block_size
    assert summary["num_requests"] == NUM_REQUESTS and summary["ttft_mean_s"] is not None  # from the latency histograms

    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert again.returncode == 0 and json.loads(again.stdout)["landed"][0]["runs"][0]["action"] == "unchanged"
    bad = subprocess.run([*command[:-3], "--selector", 'job="nothing"', "--db", str(db)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert bad.returncode == 2 and "no vLLM timeline series" in bad.stderr
