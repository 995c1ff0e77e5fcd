"""The NVML sampler on a host without NVIDIA GPUs: records nothing and says so once; and the host profile."""

from __future__ import annotations

import pytest

import collectors.host_profile as host_profile
import collectors.nvml as nvml
from collectors.nvml import GpuSampler


class _Sink:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def gpu_sample(self, row: tuple) -> None:
        self.rows.append(row)


def _has_gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
        return count > 0
    except Exception:
        return False


@pytest.mark.skipif(_has_gpu(), reason="this host has NVIDIA GPUs; the no-GPU path cannot be exercised")
def test_without_gpus_records_nothing_and_says_so_once(capsys: pytest.CaptureFixture[str]) -> None:
    nvml._said_no_gpu = False
    sink = _Sink()
    first = GpuSampler(sink, 0.0, interval_s=0.01)
    assert first.start() is False
    first.stop()
    second = GpuSampler(sink, 0.0, interval_s=0.01)
    assert second.start() is False
    second.stop()
    assert sink.rows == []
    err = capsys.readouterr().err
    assert err.count("gpu telemetry:") == 1
    assert "no GPU samples" in err


def test_host_profile_measures_positive_rooflines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_profile, "BANDWIDTH_BUFFER_BYTES", 32 * 2**20)
    monkeypatch.setattr(host_profile, "MATMUL_N", 256)
    monkeypatch.setattr(host_profile, "REPEATS", 2)
    profile = host_profile.measure_host_profile("bfloat16", threads=1)
    assert profile["kind"] == "cpu" and profile["threads"] == 1
    assert profile["hbm_bytes_per_s"] > 1e8 and profile["bf16_flops"] > 1e8
    assert "measured by collectors.host_profile" in profile["source"]
    assert profile["isa"] == host_profile.cpu_isa() and profile["isa"]  # avx2 on x86 without AVX-512
    assert host_profile.engine_thread_count(dp=1) >= 1
