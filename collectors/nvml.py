"""Per-GPU telemetry through NVML (nvidia-ml-py), sampled from a background thread while a job runs.

What each column means, and where it comes from:
- ``mem_bw_util``: HBM bandwidth utilisation from the GPM metric DRAM_BW_UTIL (id 10; Hopper and newer), the same
  counter as DCGM's DRAM_ACTIVE. It is left empty where GPM is not offered — never NVML's ``utilization.memory``,
  which is a duty cycle near 100 % whenever memory is touched at all.
- ``sm_util``: GPM SM_UTIL (share of SMs busy) where offered; otherwise NVML's ``utilization.gpu`` (time with any
  kernel running: an upper bound on SM utilisation), and the run's ``collector.gpu_sm_util_source`` says which.
- ``mem_used_bytes`` and ``power_w``: NVML memory info and power usage.

NVML numbers GPUs by PCI order and ignores CUDA_VISIBLE_DEVICES, so the sampler records every GPU of the host by
NVML index (run one collector per host). Without NVML or GPUs it records nothing and says so once per process.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any, Protocol

GPM_SM_UTIL = 2
GPM_DRAM_BW_UTIL = 10
_said_no_gpu = False


class GpuSink(Protocol):
    def gpu_sample(self, row: tuple[Any, ...]) -> None: ...


def _say_once(message: str) -> None:
    global _said_no_gpu
    if not _said_no_gpu:
        _said_no_gpu = True
        print(f"gpu telemetry: {message}", file=sys.stderr, flush=True)


class GpuSampler:
    """Samples every NVIDIA GPU every ``interval_s`` into ``sink`` (t_s relative to ``t0_monotonic``)."""

    def __init__(self, sink: GpuSink, t0_monotonic: float, interval_s: float = 0.25) -> None:
        self.sink = sink
        self.t0_monotonic = t0_monotonic
        self.interval_s = interval_s
        self.sm_util_source: str | None = None
        self.mem_bw_source: str | None = None
        self.gpu_names: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._gpm_prev: list[Any] = []
        self._gpm_cur: list[Any] = []

    def start(self) -> bool:
        """Start sampling; False (after one message per process) when there is nothing to sample."""
        try:
            import pynvml
        except ImportError:
            _say_once("nvidia-ml-py is not installed; no GPU samples (pip install nvidia-ml-py)")
            return False
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            _say_once(f"NVML unavailable ({exc}); no GPU samples recorded on this host")
            return False
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            _say_once("NVML found no GPUs; no GPU samples recorded")
            pynvml.nvmlShutdown()
            return False
        self._nvml = pynvml
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self.gpu_names = [_text(pynvml.nvmlDeviceGetName(h)) for h in self._handles]
        gpm = all(self._gpm_supported(h) for h in self._handles)
        if gpm:
            self._gpm_prev = [pynvml.nvmlGpmSampleAlloc() for _ in self._handles]
            self._gpm_cur = [pynvml.nvmlGpmSampleAlloc() for _ in self._handles]
            for h, s in zip(self._handles, self._gpm_prev, strict=True):
                pynvml.nvmlGpmSampleGet(h, s)
            self.sm_util_source = "nvml_gpm_sm_util"
            self.mem_bw_source = "nvml_gpm_dram_bw_util"
        else:
            self.sm_util_source = "nvml_utilization_gpu (kernel-busy time; an upper bound on SM utilisation)"
            self.mem_bw_source = None
        self._thread = threading.Thread(target=self._loop, name="cliffscope-nvml", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._nvml is not None:
            for sample in self._gpm_prev + self._gpm_cur:
                with contextlib.suppress(Exception):
                    self._nvml.nvmlGpmSampleFree(sample)
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None

    def _gpm_supported(self, handle: Any) -> bool:
        try:
            return bool(self._nvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice)
        except Exception:
            return False

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            t_s = time.monotonic() - self.t0_monotonic
            for index, handle in enumerate(self._handles):
                try:
                    self.sink.gpu_sample(self._sample(index, handle, t_s))
                except Exception as exc:
                    _say_once(f"sampling GPU {index} failed ({exc}); later samples may be missing")

    def _sample(self, index: int, handle: Any, t_s: float) -> tuple[Any, ...]:
        nvml = self._nvml
        sm_util: float | None
        mem_bw_util: float | None = None
        if self._gpm_cur:
            sm_util, mem_bw_util = self._gpm_metrics(index, handle)
        else:
            sm_util = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
        mem_used = int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
        power_w = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        return (round(t_s, 4), index, sm_util, mem_bw_util, mem_used, power_w)

    def _gpm_metrics(self, index: int, handle: Any) -> tuple[float | None, float | None]:
        """SM and DRAM bandwidth utilisation over the interval between two GPM samples, as fractions."""
        nvml = self._nvml
        nvml.nvmlGpmSampleGet(handle, self._gpm_cur[index])
        request = nvml.c_nvmlGpmMetricsGet_t()
        request.version = nvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = 2
        request.sample1 = self._gpm_prev[index]
        request.sample2 = self._gpm_cur[index]
        request.metrics[0].metricId = GPM_SM_UTIL
        request.metrics[1].metricId = GPM_DRAM_BW_UTIL
        nvml.nvmlGpmMetricsGet(request)
        self._gpm_prev[index], self._gpm_cur[index] = self._gpm_cur[index], self._gpm_prev[index]
        values = []
        for metric in (request.metrics[0], request.metrics[1]):
            ok = metric.nvmlReturn == nvml.NVML_SUCCESS
            values.append(max(0.0, min(1.0, metric.value / 100.0)) if ok else None)
        return values[0], values[1]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
