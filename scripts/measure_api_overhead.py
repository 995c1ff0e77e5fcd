"""Measure the OpenAI API server's own cost per request and per output token on this host's vLLM CPU server.

Why: a served benchmark (`vllm bench serve`) drives vLLM through its OpenAI-compatible frontend, a separate process
from the engine core. That process parses each HTTP request, hands it to the engine core, and turns every output the
engine core sends back into a streamed SSE chunk. Its work is serial (one asyncio loop), so with very short outputs it
caps the request rate whatever the engine could do. This script measures that work directly:

- the frontend process's own CPU seconds (utime + stime of the api_server process, the engine core child excluded)
  per phase, less its idle rate (measured first, over IDLE_S seconds without requests) times the phase's duration,
  fitted as ``cpu = request_s · requests + token_s · output_tokens + step_s · engine steps`` (non-negative least
  squares) over phases with 1 and many output tokens at concurrency 1, 4 and 16: the frontend handles one output
  message per engine step (the steps are counted by the server's ``vllm:iteration_tokens_total`` histogram);
- the client-side latency (vLLM's own bench request function, streaming completions) minus the engine core's
  residence (queue + inference, from the server's /metrics histograms): the latency the frontend path adds.

Run (from the repository root, under the shared lock; ~2 minutes, the server is stopped at the end):

    flock /tmp/cliffscope-heavy.lock /work/main/.venv/bin/python scripts/measure_api_overhead.py --out /tmp/api.json

Prints one JSON object (and writes it to --out). The figures are a CPU host's; docs/methods.md says how they are used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "data" / "models" / "tiny-llama-4l"
# (name, prompt tokens, output tokens, concurrency, requests)
PHASES = [
    ("c1-out1", 32, 1, 1, 200),
    ("c1-out64", 32, 64, 1, 20),
    ("c16-out1", 32, 1, 16, 400),
    ("c4-out16", 32, 16, 4, 100),
    ("c16-out64", 32, 64, 16, 96),
]
IDLE_S = 8.0
METRICS = (
    "vllm:request_queue_time_seconds",
    "vllm:request_inference_time_seconds",
    "vllm:request_decode_time_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:iteration_tokens_total",
)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    """The engine core and its worker (vLLM runs the model in a grandchild of the API server)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    kids = [int(x) for x in out.split()]
    return kids + [g for k in kids for g in _descendants(k)]


def _scrape(base: str) -> dict[str, float]:
    """Histogram sums and counts of METRICS from /metrics."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in METRICS:
            for suffix in ("_sum", "_count"):
                if line.startswith(name + suffix + "{") or line.startswith(name + suffix + " "):
                    out[name + suffix] = out.get(name + suffix, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def _phase(base: str, isl: int, osl: int, concurrency: int, n: int) -> dict[str, float]:
    """Send n requests through vLLM's own bench request function with a closed loop of ``concurrency`` slots."""
    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_completions

    rng = np.random.default_rng(0)
    sem = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(i: int):  # type: ignore[no-untyped-def]
            prompt = [int(x) for x in rng.integers(3, 4000, size=isl)]
            inp = RequestFuncInput(
                prompt=prompt,
                api_url=f"{base}/v1/completions",
                prompt_len=isl,
                output_len=osl,
                model=str(MODEL),
                ignore_eos=True,
            )
            async with sem:
                return await async_request_openai_completions(inp, session)

        t0 = time.perf_counter()
        outs = await asyncio.gather(*(one(i) for i in range(n)))
        dur = time.perf_counter() - t0
    ok = [o for o in outs if o.success]
    if len(ok) != n:
        errors = {o.error[:200] for o in outs if not o.success}
        raise SystemExit(f"{n - len(ok)} of {n} requests failed: {errors}")
    itl = [x for o in ok for x in o.itl]
    return {
        "duration_s": dur,
        "request_throughput": n / dur,
        "mean_latency_ms": 1000 * float(np.mean([o.latency for o in ok])),
        "mean_ttft_ms": 1000 * float(np.mean([o.ttft for o in ok])),
        "mean_itl_ms": 1000 * float(np.mean(itl)) if itl else 0.0,
        "output_tokens": float(sum(o.output_tokens or osl for o in ok)),
    }


def _start_server(port: int, kv_bytes: int, work: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, VLLM_CACHE_ROOT=str(work / "cache"), VLLM_LOGGING_LEVEL="WARNING")
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(MODEL), "--load-format", "dummy", "--skip-tokenizer-init",
        "--kv-cache-memory-bytes", str(kv_bytes), "--max-num-seqs", "64", "--max-model-len", "1024",
        "--enforce-eager", "--port", str(port), "--host", "127.0.0.1",
    ]  # fmt: skip
    log = (work / "server.log").open("wb")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], work: Path, limit_s: float = 300) -> None:
    t0 = time.time()
    while time.time() - t0 < limit_s:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{(work / 'server.log').read_text()[-3000:]}")
        try:
            if urllib.request.urlopen(f"{base}/health", timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"server did not answer /health in time:\n{(work / 'server.log').read_text()[-3000:]}")


def _fit(rows: list[dict[str, float]]) -> tuple[float, float, float]:
    """Non-negative least squares of the frontend's busy CPU seconds on (requests, output tokens, engine steps)."""
    from scipy.optimize import nnls

    a = np.array([[r["requests"], r["output_tokens"], r["engine_steps"]] for r in rows])
    y = np.array([r["frontend_busy_cpu_s"] for r in rows])
    coef, _ = nnls(a, y)
    return float(coef[0]), float(coef[1]), float(coef[2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=18123)
    ap.add_argument("--kv-cache-memory-bytes", type=int, default=64 << 20)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    base = f"http://127.0.0.1:{args.port}"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout's SIGTERM still stops the server below
    with tempfile.TemporaryDirectory(prefix="cliffscope-api-") as tmp:
        work = Path(tmp)
        proc = _start_server(args.port, args.kv_cache_memory_bytes, work)
        try:
            _wait_healthy(base, proc, work)
            engine_pids = _descendants(proc.pid)
            asyncio.run(_phase(base, 32, 4, 4, 16))  # warm-up, not counted
            i0 = _cpu_seconds(proc.pid)
            time.sleep(IDLE_S)
            idle_rate = (_cpu_seconds(proc.pid) - i0) / IDLE_S
            rows = []
            for name, isl, osl, conc, n in PHASES:
                m0, f0 = _scrape(base), _cpu_seconds(proc.pid)
                e0 = sum(_cpu_seconds(p) for p in engine_pids)
                client = asyncio.run(_phase(base, isl, osl, conc, n))
                m1, f1 = _scrape(base), _cpu_seconds(proc.pid)
                e1 = sum(_cpu_seconds(p) for p in engine_pids)
                d = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in m1}
                count = d.get("vllm:request_inference_time_seconds_count", 0.0) or float(n)
                residence = (
                    d.get("vllm:request_queue_time_seconds_sum", 0.0)
                    + d.get("vllm:request_inference_time_seconds_sum", 0.0)
                ) / count
                rows.append(
                    {
                        "phase": name, "isl": isl, "osl": osl, "concurrency": conc, "requests": n,
                        **client,
                        "engine_residence_ms": 1000 * residence,
                        "frontend_latency_ms": client["mean_latency_ms"] - 1000 * residence,
                        "frontend_cpu_s": f1 - f0,
                        "frontend_busy_cpu_s": f1 - f0 - idle_rate * client["duration_s"],
                        "engine_steps": d.get("vllm:iteration_tokens_total_count", 0.0),
                        "engine_core_cpu_s": e1 - e0,
                    }
                )  # fmt: skip
            request_s, token_s, step_s = _fit(rows)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    result = {
        "host": os.uname().nodename,
        "cpus": os.cpu_count(),
        "model": MODEL.name,
        "phases": rows,
        "frontend_request_s": request_s,
        "frontend_token_s": token_s,
        "frontend_step_s": step_s,
        "frontend_idle_cpu_per_s": idle_rate,
        "load_average": os.getloadavg(),
        "source": "measured: scripts/measure_api_overhead.py (frontend process CPU time, least squares)",
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
