"""The roofline of the host a CPU run ran on: memory bandwidth and matmul throughput, measured with torch.

A CPU run can only be predicted from the machine it ran on: datasheet figures for a shared 2-vCPU slice mean
little. So before a sweep the collector measures, with the thread count vLLM's CPU worker uses and at the job's
dtype, (1) streaming read bandwidth (sum over a buffer far larger than the caches) and copy bandwidth, and (2)
square-matmul FLOPS. The result is stored in every run's ``device_profile`` with the same keys as the engine's
device catalog (``hbm_bytes_per_s``, ``bf16_flops``, ...), so the engine can predict the run from it.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from collectors.spec import JobSpec

BANDWIDTH_BUFFER_BYTES = 256 * 2**20
MATMUL_N = 1024
REPEATS = 5


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def engine_thread_count(dp: int = 1) -> int:
    """Threads vLLM's CPU worker gets here: all cores of the NUMA node minus one reserved core, split by replicas."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    reserved = 1 if cores > 1 else 0
    if dp <= 1:
        return max(1, cores - reserved)
    return max(1, cores // dp)


def cpu_isa() -> str:
    """The matmul instruction set torch (and so vLLM's CPU linear layers) can use here: ``amx-bf16``,
    ``avx512-bf16``, ``avx512`` or ``avx2``. Two hosts the kernel names alike ("AMD EPYC") can differ in it by two
    orders of magnitude on bf16: the bundled cpu-iv-a runs' host measured 202 GFLOP/s of 1024² bf16 matmul on one
    thread (2026-11-23); the 2026-12-02 host, AVX2 only, 0.25–0.87 GFLOP/s by wall clock at load average 6–8 and
    8.6 GFLOP/s per CPU-second at another moment (torch has no native bf16 path there, and vLLM's oneDNN linear
    cannot build a bf16 primitive on it, so vLLM falls back to torch's kernel too)."""
    import torch

    cpu = torch.cpu
    checks = (("amx-bf16", "_is_amx_tile_supported"), ("avx512-bf16", "_is_avx512_bf16_supported"),
              ("avx512", "_is_avx512_supported"))  # fmt: skip
    for name, probe in checks:
        if getattr(cpu, probe, lambda: False)():
            return name
    return "avx2" if platform.machine() in ("x86_64", "AMD64") else platform.machine()


def _best_seconds(fn: Callable[[], Any], repeats: int = REPEATS) -> float:
    fn()  # warm-up: page faults and lazy allocation are not bandwidth
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_host_profile(dtype: str = "bfloat16", threads: int | None = None) -> dict[str, Any]:
    """Measure this CPU; returns a device profile (bytes/s and FLOP/s, plus how and when it was measured)."""
    import torch

    threads = threads or engine_thread_count()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        floats = BANDWIDTH_BUFFER_BYTES // 4
        src = torch.ones(floats, dtype=torch.float32)
        dst = torch.empty_like(src)
        read_s = _best_seconds(lambda: src.sum())
        copy_s = _best_seconds(lambda: dst.copy_(src))
        torch_dtype = getattr(torch, dtype if dtype != "auto" else "bfloat16")
        a = torch.randn(MATMUL_N, MATMUL_N).to(torch_dtype)
        b = torch.randn(MATMUL_N, MATMUL_N).to(torch_dtype)
        matmul_s = _best_seconds(lambda: torch.matmul(a, b))
    finally:
        torch.set_num_threads(previous)
    flops = 2 * MATMUL_N**3 / matmul_s
    try:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory_bytes = 0
    return {
        "name": socket.gethostname(),
        "kind": "cpu",
        "cpu_model": cpu_model_name(),
        "isa": cpu_isa(),
        "threads": threads,
        "dtype": dtype,
        "memory_bytes": int(memory_bytes),
        "hbm_bytes_per_s": round(BANDWIDTH_BUFFER_BYTES / read_s),
        "copy_bytes_per_s": round(2 * BANDWIDTH_BUFFER_BYTES / copy_s),
        f"{dtype}_flops": round(flops),
        "bf16_flops": round(flops) if dtype in ("bfloat16", "auto") else None,
        "source": (
            f"measured by collectors.host_profile with torch {torch.__version__}, {threads} thread(s): "
            f"best of {REPEATS} sums over {BANDWIDTH_BUFFER_BYTES >> 20} MiB (read bandwidth) and "
            f"{MATMUL_N}x{MATMUL_N} {dtype} matmuls"
        ),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def profile_for_jobs(jobs: Iterable[JobSpec]) -> dict[str, Any] | None:
    """A host profile for a sweep's CPU jobs (GPU jobs are predicted from the catalog); None if none run on CPU."""
    from collectors.job import _device_name

    jobs = list(jobs)
    cpu_jobs = [j for j in jobs if _device_name(j.engine.device) == "cpu"]
    if not cpu_jobs:
        return None
    return measure_host_profile(cpu_jobs[0].engine.dtype)
