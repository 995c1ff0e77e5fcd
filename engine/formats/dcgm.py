"""NVIDIA DCGM exporter series beside vLLM's in one scrape log or query_range export -> the run's ``gpu_samples``.

Series read (dcgm-exporter's etc/dcp-metrics-included.csv, checked 2026-12-02 at
https://github.com/NVIDIA/dcgm-exporter/blob/main/etc/dcp-metrics-included.csv, which gives each one's unit):

=================  ============================  ===========================================================
column             metric                        unit and conversion
=================  ============================  ===========================================================
``mem_bw_util``    ``DCGM_FI_PROF_DRAM_ACTIVE``  "Ratio of cycles the device memory interface is active": 0..1
``sm_util``        ``DCGM_FI_PROF_SM_ACTIVE``    "The ratio of cycles an SM has at least 1 warp assigned": 0..1
``mem_used_bytes`` ``DCGM_FI_DEV_FB_USED``       "Framebuffer memory used (in MiB)": × 2**20
``power_w``        ``DCGM_FI_DEV_POWER_USAGE``   "Power draw (in W)"
=================  ============================  ===========================================================

DRAM_ACTIVE is the HBM bandwidth utilisation the paper plots (Fig. 2b/6b). The GPU is the ``gpu`` label (DCGM's
index). DCGM series carry no vLLM ``engine`` label, so which GPUs served which DP rank is not in the file: every run of
the file gets all of the node's GPUs, and the run's notes say so. Series from several hosts cannot be told apart by
``gpu`` alone and are refused (select one server's series). The host label is ``Hostname`` in the exporter's output
up to 2026 (both real outputs in tests/support/tool_files/) and ``hostname`` since NVIDIA/dcgm-exporter commit d5e5f51
"Rename Hostname label to hostname (#655)", 2026-05-12; either is read. A GPU split into MIG instances gets one series
per instance under the same ``gpu`` label (labels ``GPU_I_PROFILE``, ``GPU_I_ID``, from the exporter's
internal/pkg/rendermetrics/render_metrics.go): a slice's memory and bandwidth are not the GPU's, so such series are
refused unless one slice is selected.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Protocol

import pyarrow as pa

from engine.bundle import GPU_SAMPLES
from engine.formats.model import Limits, ValidationError

COLUMN_OF: dict[str, str] = {
    "DCGM_FI_PROF_DRAM_ACTIVE": "mem_bw_util",
    "DCGM_FI_PROF_SM_ACTIVE": "sm_util",
    "DCGM_FI_DEV_FB_USED": "mem_used_bytes",
    "DCGM_FI_DEV_POWER_USAGE": "power_w",
}
MIB = 1024**2
# dcgm-exporter's own label (old and new spelling), then the one Prometheus adds to every target
HOST_LABELS = ("Hostname", "hostname", "instance")
MIG_INSTANCE = "GPU_I_ID"


class _Sample(Protocol):
    name: str
    labels: tuple[tuple[str, str], ...]
    t_ms: float
    value: float
    line: int


def is_dcgm(name: str) -> bool:
    return name in COLUMN_OF


def gpu_table(
    samples: list[_Sample], window: tuple[float, float], limits: Limits, display: str
) -> tuple[pa.Table | None, list[str]]:
    """The GPU samples inside the run's window, on the run's clock (t = 0 at ``window[0]``), and a note."""
    if not samples:
        return None, []
    _one_host(samples, display)
    _one_mig_instance_per_gpu(samples, display)
    t0, t_end = window
    rows: dict[tuple[float, int], dict[str, Any]] = defaultdict(dict)
    for sample in samples:
        if not t0 <= sample.t_ms <= t_end:
            continue
        gpu = _gpu_index(sample, display)
        column = COLUMN_OF[sample.name]
        value: float | int | None = None if math.isnan(sample.value) else sample.value
        if column == "mem_used_bytes" and value is not None and math.isfinite(value):
            value = round(value * MIB)
        previous = rows[(sample.t_ms, gpu)].get(column)
        # The same GPU reported twice (e.g. once per pod that uses it): keep the larger reading.
        rows[(sample.t_ms, gpu)][column] = value if previous is None or value is None else max(previous, value)
    if len(rows) > limits.max_rows:
        raise ValidationError.one(display, f"{len(rows):,} GPU samples is over the row limit", "split the file")
    keys = sorted(rows)
    columns: dict[str, list[Any]] = {"t_s": [(t - t0) / 1000.0 for t, _gpu in keys], "gpu_index": [g for _t, g in keys]}
    for field in GPU_SAMPLES.names[2:]:
        columns[field] = [rows[key].get(field) for key in keys]
    gpus = sorted({gpu for _t, gpu in keys})
    read = sorted({COLUMN_OF[s.name] for s in samples})
    note = (
        f"GPU samples from the DCGM exporter: {len(gpus)} GPU(s) (gpu label {', '.join(map(str, gpus))}), "
        f"{', '.join(read)}; the node's GPUs, not split by DP rank."
    )
    return pa.table(columns), [note]


def _one_host(samples: list[_Sample], display: str) -> None:
    for label in HOST_LABELS:
        hosts = sorted({dict(s.labels)[label] for s in samples if label in dict(s.labels)})
        if len(hosts) > 1:
            raise ValidationError.one(
                display,
                f"DCGM series from {len(hosts)} hosts ({label} = {', '.join(hosts[:3])}...): GPUs cannot be told "
                "apart by the gpu label",
                f"export one server's series (e.g. --selector '{label}=\"{hosts[0]}\"')",
                column=label,
            )


def _one_mig_instance_per_gpu(samples: list[_Sample], display: str) -> None:
    instances: dict[str, set[str]] = defaultdict(set)
    for sample in samples:
        labels = dict(sample.labels)
        if MIG_INSTANCE in labels:
            instances[labels.get("gpu", "")].add(labels[MIG_INSTANCE])
    for gpu, ids in sorted(instances.items()):
        if len(ids) > 1:
            raise ValidationError.one(
                display,
                f"gpu {gpu} has series for {len(ids)} MIG instances ({MIG_INSTANCE} = {', '.join(sorted(ids)[:3])}): "
                "one slice's memory and bandwidth are not the GPU's",
                f"select the slice the server ran on (e.g. --dcgm-selector '{MIG_INSTANCE}=\"{sorted(ids)[0]}\"')",
                column=MIG_INSTANCE,
            )


def _gpu_index(sample: _Sample, display: str) -> int:
    text = dict(sample.labels).get("gpu")
    try:
        index = int(text) if text is not None else -1
    except ValueError:
        index = -1
    if not 0 <= index < 2**31:
        raise ValidationError.one(
            display,
            f"{sample.name} (line or series {sample.line}) has gpu label {text!r}, not a GPU index",
            "keep the DCGM exporter's gpu label (0, 1, ...) on every series",
            column="gpu",
        )
    return index
