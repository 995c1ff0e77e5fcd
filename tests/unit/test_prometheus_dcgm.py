"""Prometheus text through prometheus_client's parser (escaping, OpenMetrics), and DCGM exporter series landing in
``gpu_samples`` beside the vLLM engine samples of the same window, from scrape text and from query_range JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest

from engine.formats import prometheus
from engine.store import Store, ValidationError
from tests.support.tool_outputs import metrics_scrapes, query_range

TOOL_FILES = Path(__file__).parents[1] / "support" / "tool_files"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "p.duckdb") as opened:
        yield opened


def _gpu_rows(store: Store, run_id: str) -> pl.DataFrame:
    """The stored GPU samples, wide again (the store's timeline is long form, one bucket per sample here)."""
    long = store.gpu_timeline(run_id, max_points=100_000)
    return long.pivot(on="series", index=["t_s", "gpu_index"], values="value").sort(["t_s", "gpu_index"])


def _ingest(store: Store, text: str, name: str = "metrics.prom"):
    return store.ingest_bytes(text.encode(), name).runs


def test_dcgm_series_land_in_gpu_samples_on_the_engine_clock(store: Store) -> None:
    (run,) = _ingest(store, metrics_scrapes(12, gpus=2))
    # one DCGM scrape 100 ms after each vLLM scrape, 2 GPUs; the one after the window's last scrape is outside it
    assert run.rows["gpu_samples"] == 2 * (run.rows["engine_samples"] - 1)
    frame = _gpu_rows(store, run.run_id)
    engine_t = store.engine_samples(run.run_id)["t_s"].to_list()
    # the DCGM scrape is 100 ms after vLLM's: same window, same t = 0
    assert frame.filter(frame["gpu_index"] == 0)["t_s"].to_list() == pytest.approx([t + 0.1 for t in engine_t[:-1]])
    first = frame.row(4, named=True)  # scrape 2, GPU 0
    k = round((first["t_s"] - 0.1) / 0.5)  # scrape number (t = 0 is scrape 0: requests wait from the first one)
    assert first["sm_util"] == pytest.approx(min(1.0, 0.08 * k)) and first["mem_bw_util"] == pytest.approx(0.06 * k)
    assert first["mem_used_bytes"] == (1000 + 100 * k) * 2**20 and first["power_w"] == pytest.approx(100 + 10 * k)
    assert frame["mem_bw_util"].max() <= 1.0 and frame["sm_util"].max() <= 1.0
    notes = store.run_meta(run.run_id)["notes"]
    assert "DCGM exporter: 2 GPU(s)" in notes and "mem_bw_util" in notes


def test_dcgm_in_query_range_json(store: Store) -> None:
    response = query_range({"vllm:num_requests_running": [0, 4, 8, 0], "vllm:kv_cache_usage_perc": [0, 0.5, 1, 0]})
    for gpu in ("0", "1"):
        for name, values in {
            "DCGM_FI_PROF_DRAM_ACTIVE": [0.1, 0.6, 0.9, 0.1],
            "DCGM_FI_DEV_FB_USED": [10, 20, 30, 5],
        }.items():
            response["data"]["result"].append(
                {"metric": {"__name__": name, "gpu": gpu, "instance": "dcgm:9400", "Hostname": "n1"},
                 "values": [[1763900000 + i, str(v)] for i, v in enumerate(values)]}
            )  # fmt: skip
    (run,) = store.ingest_bytes(json.dumps(response).encode(), "range.json").runs
    assert run.rows["gpu_samples"] == 2 * run.rows["engine_samples"] == 8
    frame = _gpu_rows(store, run.run_id)
    assert frame["mem_bw_util"].to_list() == pytest.approx([0.1, 0.1, 0.6, 0.6, 0.9, 0.9, 0.1, 0.1])
    assert frame["mem_used_bytes"].to_list()[:2] == [10 * 2**20, 10 * 2**20]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('device="nvidia1",gpu="1"', 'device="nvidia1",gpu="x"'), "gpu label 'x'"),
        (lambda t: t.replace('Hostname="node-1",UUID="GPU-00000001"', 'Hostname="node-2",UUID="GPU-00000001"'),
         "DCGM series from 2 hosts (Hostname"),
        (lambda t: "\n".join(
            line.replace(line.split()[-2], "55") if line.startswith("DCGM_FI_PROF_DRAM_ACTIVE") else line
            for line in t.splitlines()), "divide by 100"),
    ],
)  # fmt: skip
def test_bad_dcgm_series_are_refused_naming_the_label_or_column(store: Store, edit, message: str) -> None:
    before = store.table_counts()
    with pytest.raises(ValidationError) as caught:
        _ingest(store, edit(metrics_scrapes(12, gpus=2)))
    assert message in str(caught.value)
    assert store.table_counts() == before


def test_library_parse_matches_the_one_line_at_a_time_parse() -> None:
    """The repeated-series shortcut gives exactly what prometheus_client gives for every line."""
    text = metrics_scrapes(6, engines=("0", "1"), gpus=1)
    fast = prometheus.parse_text(text, "x")
    kept = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line and not line.startswith("#")]
    kept = [(n, line) for n, line in kept if line.split("{", 1)[0].split()[0] in prometheus.WANTED]
    slow = [prometheus._sample(prometheus._library_samples([line], False)[0], n, "x") for n, line in kept]
    assert fast == slow and len(fast) > 100


def test_escapes_and_openmetrics_are_the_libraries_business(store: Store) -> None:
    om = "\n".join(
        [
            "# TYPE vllm:num_requests_running gauge",
            'vllm:num_requests_running{model_name="a\\\\b \\"q\\"\\nx",engine="0"} 3 1763900000.5',
            'vllm:num_requests_running{model_name="a\\\\b \\"q\\"\\nx",engine="0"} 0 1763900001.5',
            "# EOF",
        ]
    )
    samples = prometheus.parse_text(om, "om.txt")
    assert [s.t_ms for s in samples] == [1763900000500.0, 1763900001500.0]  # OpenMetrics stamps are seconds
    assert dict(samples[0].labels)["model_name"] == 'a\\b "q"\nx'
    with pytest.raises(ValidationError, match=r"line 3 is not a Prometheus sample"):
        prometheus.parse_text(
            "vllm:num_requests_running 1 10\nvllm:num_requests_running 2 20\nvllm:num_requests_running{x 3 30\n",
            "bad.prom",
        )
    assert math.isnan(prometheus.parse_text("vllm:num_requests_running NaN 10\n", "n.prom")[0].value)


# Real dcgm-exporter /metrics output published by others (tests/support/tool_files/README.md says where from): the
# values each file states for GPU 0, and what the store must hold for them.
REAL_DCGM = {
    "dcgm-exporter-t4-eccd.prom": {"mem_bw_util": 0.092781, "mem_used_bytes": 5120 * 2**20, "power_w": 68.244},
    "dcgm-exporter-l4-kops.prom": {"mem_bw_util": 0.0, "mem_used_bytes": 0, "power_w": 16.365},
}
QUOTED = {  # the verbatim value text on each series' line, so the expectation above is read from the file
    "dcgm-exporter-t4-eccd.prom": {"DCGM_FI_PROF_DRAM_ACTIVE": "0.092781", "DCGM_FI_DEV_FB_USED": "5120",
                                   "DCGM_FI_DEV_POWER_USAGE": "68.244000"},
    "dcgm-exporter-l4-kops.prom": {"DCGM_FI_PROF_DRAM_ACTIVE": "0.000000", "DCGM_FI_DEV_FB_USED": "0",
                                   "DCGM_FI_DEV_POWER_USAGE": "16.365000"},
}  # fmt: skip


BUSY_MS = 1795434622594  # a scrape of the real vLLM scrape log with 8 requests running


def _beside_real_vllm(*exporters: str) -> str:
    """Real exporter scrapes (no vLLM series, so no window of their own) stamped 100 ms after a busy scrape of the real
    vLLM 0.32 scrape log, the way the scrape collector stamps each line, appended to that log."""
    vllm = (TOOL_FILES / "vllm-0.32-cpu-metrics-scrapes.prom").read_text()
    assert f'model_name="/tmp/bs/model"}} 8.0 {BUSY_MS}' in vllm
    lines = [line for text in exporters for line in text.split("\n")]
    return vllm + "\n".join(line if line.startswith("#") or not line else f"{line} {BUSY_MS + 100}" for line in lines)


@pytest.mark.parametrize("name", sorted(REAL_DCGM))
def test_real_dcgm_exporter_output_lands_in_gpu_samples(store: Store, name: str) -> None:
    """Each real exporter output through the real reader into DuckDB: every stored value is the file's."""
    exporter = (TOOL_FILES / name).read_text()
    for metric, value in QUOTED[name].items():
        assert any(line.startswith(metric + "{") and line.endswith("} " + value) for line in exporter.splitlines())
    (run,) = _ingest(store, _beside_real_vllm(exporter), name)
    assert run.rows["gpu_samples"] == 1
    engine = store.engine_samples(run.run_id)
    (row,) = _gpu_rows(store, run.run_id).iter_rows(named=True)
    busy_t = engine.filter(engine["running"] == 8)["t_s"].item()
    assert row["gpu_index"] == 0 and row["t_s"] == pytest.approx(busy_t + 0.1)
    for column, value in REAL_DCGM[name].items():
        assert row[column] == pytest.approx(value), column
    assert row.get("sm_util") is None  # DCGM_FI_PROF_SM_ACTIVE is not in the GPU Operator's default counters
    notes = store.run_meta(run.run_id)["notes"]
    assert "DCGM exporter: 1 GPU(s) (gpu label 0), mem_bw_util, mem_used_bytes, power_w" in notes


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t, "DCGM series from 2 hosts (Hostname = cp-bm14r7, i-030791dc5a37cd257"),
        # dcgm-exporter since commit d5e5f51 (2026-05-12) spells the label hostname
        (lambda t: t.replace(",Hostname=", ",hostname="), "DCGM series from 2 hosts (hostname = cp-bm14r7"),
    ],
)
def test_two_real_hosts_are_refused_naming_the_host_label(store: Store, edit, message: str) -> None:
    """The T4 and the L4 outputs are two hosts' GPU 0: together they cannot be told apart by the gpu label."""
    texts = [edit((TOOL_FILES / name).read_text()) for name in sorted(REAL_DCGM)]
    with pytest.raises(ValidationError) as caught:
        _ingest(store, _beside_real_vllm(*texts))
    assert message in str(caught.value) and "--selector" in str(caught.value)
    assert store.table_counts()["gpu_samples"] == 0


def test_mig_instances_of_one_gpu_are_refused_naming_gpu_i_id(store: Store) -> None:
    """The T4 output as the exporter renders a MIG-split GPU (GPU_I_PROFILE, GPU_I_ID after modelName), two slices."""
    text = (TOOL_FILES / "dcgm-exporter-t4-eccd.prom").read_text()
    slices = [text.replace('modelName="Tesla T4"', f'modelName="Tesla T4",GPU_I_PROFILE="1g.5gb",GPU_I_ID="{i}"')
              for i in (3, 5)]  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        _ingest(store, _beside_real_vllm(*slices))
    assert "gpu 0 has series for 2 MIG instances (GPU_I_ID = 3, 5)" in str(caught.value)
    (run,) = _ingest(store, _beside_real_vllm(slices[0]))  # one slice selected: read
    assert run.rows["gpu_samples"] == 1
