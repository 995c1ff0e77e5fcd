import pytest

from engine.catalog import load_gpu
from engine.perf import Calibration, StepModel


def test_ring_allreduce_formula() -> None:
    sm = StepModel("70B", "H200", tp=8, calibration=Calibration(link_efficiency=1.0, link_latency_s=5e-6))
    payload = 1_000_000
    expected = 5e-6 * 2 * 7 + 2 * 7 / 8 * payload / 450e9
    assert sm.allreduce_s(payload) == pytest.approx(expected)
    assert sm.allreduce_s(payload, n=1) == 0.0


def test_decode_is_memory_bound_on_the_roofline() -> None:
    cal = Calibration(mem_efficiency=1.0, step_overhead_s=0.0, per_seq_overhead_s=0.0, layer_overhead_s=0.0)
    sm = StepModel("8B", "H200", calibration=cal)
    cost = sm.stage_cost(tokens=1, attn_pairs=1, kv_tokens_read=0, seqs=1)
    # One token: every bf16 weight but the embedding table (a lookup) streamed once at 4.8 TB/s.
    weights = sm.fixed_weight_bytes
    assert weights == pytest.approx((8.03e9 - 128256 * 4096) * 2, rel=0.005)
    assert float(cost.time_s) == pytest.approx((weights + 131_072) / 4.8e12, rel=1e-6)
    assert float(cost.memory_s) > float(cost.compute_s)


def test_prefill_is_compute_bound() -> None:
    cal = Calibration(compute_efficiency=1.0, step_overhead_s=0.0, per_seq_overhead_s=0.0, layer_overhead_s=0.0)
    sm = StepModel("8B", "H200", calibration=cal)
    cost = sm.stage_cost(tokens=8192, attn_pairs=8192 * 4096, kv_tokens_read=0, seqs=1)
    assert float(cost.compute_s) > float(cost.memory_s)
    linear = 2 * (8.03e9 - 128256 * 4096) * 8192
    attn = 4 * 32 * 128 * 32 * 8192 * 4096
    assert float(cost.time_s) == pytest.approx((linear + attn) / 989e12, rel=0.01)


def test_kv_read_grows_decode_time_and_calibration_object() -> None:
    sm = StepModel("8B", "H200")
    assert sm.decode_step_s(256, 8000) > sm.decode_step_s(256, 1000)
    fast = StepModel("8B", "H200", calibration={"mem_efficiency": 0.95, "source": "fit"})
    assert fast.decode_step_s(64, 2000) < sm.decode_step_s(64, 2000)
    assert fast.calibration.source == "fit"


def test_pp_round_streams_weights_once_per_micro_batch() -> None:
    tp8 = StepModel("405B", "H200", tp=8)
    pp8 = StepModel("405B", "H200", pp=8)
    # 405B decode: PP=8 reads each stage's weights once per micro-batch, so a round costs ~8 TP=8 steps.
    ratio = pp8.decode_step_s(256, 2000) / tp8.decode_step_s(256, 2000)
    assert 3 < ratio < 10


def test_moe_touches_experts_by_batch() -> None:
    r1 = StepModel("R1", "H200", tp=8)
    one = r1.stage_cost(1, 1, 0, 1)
    many = r1.stage_cost(512, 512, 0, 512)
    assert float(many.bytes_moved) > 5 * float(one.bytes_moved)
    assert load_gpu("H200").bf16_flops == 989e12


def test_host_contention_slows_ranks_sharing_a_cpu_host_and_never_a_gpu() -> None:
    from dataclasses import replace as _replace

    from engine.catalog import load_gpu as _load_gpu
    from engine.perf import Calibration as _Calibration
    from engine.perf import StepModel as _StepModel

    contended = _Calibration(host_contention=0.5)
    host = _load_gpu("cpu-host")
    alone = _StepModel("tiny-llama-4l", host, calibration=contended).decode_step_s(8, 256)
    shared_host = _replace(host, ranks_sharing=3)
    shared = _StepModel("tiny-llama-4l", shared_host, calibration=contended).decode_step_s(8, 256)
    assert abs(shared / alone - 2.0) < 1e-9  # 1 + 0.5 · (3 − 1)
    gpu = _replace(_load_gpu("H100"), ranks_sharing=3)  # a GPU's ranks have a device each: no sharing cost
    plain = _StepModel("tiny-llama-4l", gpu).decode_step_s(8, 256)
    assert _StepModel("tiny-llama-4l", gpu, calibration=contended).decode_step_s(8, 256) == plain
