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


def test_expected_distinct_experts_against_the_formula_and_a_draw() -> None:
    """E·(1 − (1 − k/E)^B): 16 tokens top-8 of 256 hit 256·(1 − (31/32)^16) = 101.96 experts; a draw agrees."""
    import math

    import numpy as np

    from engine.perf import expected_distinct_experts

    assert float(expected_distinct_experts(16, 8, 256)) == pytest.approx(256 * (1 - math.pow(31 / 32, 16)))
    assert float(expected_distinct_experts(16, 8, 256)) == pytest.approx(101.96, abs=0.01)
    assert float(expected_distinct_experts(1, 8, 256)) == pytest.approx(8.0)  # one token: exactly its k experts
    assert float(expected_distinct_experts(0, 8, 256)) == 0.0
    assert float(expected_distinct_experts(10_000, 8, 256)) == pytest.approx(256.0)
    rng = np.random.default_rng(0)  # uniform top-k routing, drawn: each token picks 8 distinct experts of 256
    hits = [len({e for _ in range(16) for e in rng.choice(256, 8, replace=False)}) for _ in range(500)]
    assert float(np.mean(hits)) == pytest.approx(101.96, rel=0.01)


def test_ring_allreduce_by_message_size_and_ring_size() -> None:
    """α·2(n−1) + 2(n−1)/n · S/B: 1 MB over 8 ranks at α 5 µs, 450 GB/s = 70 µs + 3.889 µs; over 2 ranks
    10 µs + 2.222 µs; one rank costs nothing."""
    from engine.perf import ring_allreduce_s

    assert float(ring_allreduce_s(1e6, 8, 5e-6, 450e9)) == pytest.approx(70e-6 + 1.75e6 / 450e9)
    assert float(ring_allreduce_s(1e6, 8, 5e-6, 450e9)) == pytest.approx(73.889e-6, rel=1e-4)
    assert float(ring_allreduce_s(1e6, 2, 5e-6, 450e9)) == pytest.approx(12.222e-6, rel=1e-4)
    assert float(ring_allreduce_s(1e6, 1, 5e-6, 450e9)) == 0.0
    # the step model's TP all-reduce is this ring with the device's link (H100 NVLink 4: 450 GB/s one way)
    sm = StepModel("8B", "H100", tp=2, calibration=Calibration(link_efficiency=1.0, link_latency_s=5e-6))
    assert float(sm.allreduce_s(1e6)) == pytest.approx(12.222e-6, rel=1e-4)


def test_moe_dispatch_and_combine_bytes_per_token() -> None:
    """DeepSeek-R1 at TP=8 (h 7168, top-8, expert intermediate 2048/8, 58 MoE layers, bf16 activations): per token
    58 · 2 · (3·8·7168 + 6·8·256 + 7168) = 22,212,608 bytes moved by gather, expert outputs and combine."""
    r1 = StepModel("DeepSeek-R1", "H200", tp=8)
    assert r1.moe_dispatch_bytes_per_token == 58 * 2 * (3 * 8 * 7168 + 6 * 8 * 256 + 7168) == 22_212_608
    assert StepModel("8B", "H200").moe_dispatch_bytes_per_token == 0.0  # dense: none
    few, many = r1.stage_cost(4, 4, 0, 4), r1.stage_cost(128, 128, 0, 128)
    # bytes: weights always read + routed experts by distinct experts hit + dispatch per token (+ KV)
    hit = 1 - (1 - 8 / 256) ** 128
    kv = (0 + 128) * r1.kv_bytes_per_token_dev  # KV read (none) + written (the new tokens)
    expected = r1.fixed_weight_bytes + r1.routed_weight_bytes * hit + 128 * 22_212_608 + kv
    assert float(many.bytes_moved) == pytest.approx(expected, rel=1e-9)
    assert float(many.bytes_moved) > 4 * float(few.bytes_moved)


def test_mla_prefill_pairs_cost_the_up_projected_form() -> None:
    """MLA decode (absorbed) costs 2·H/tp·(576 + 512) FLOPs per pair and layer, prefill 2·H/tp·(128 + 64 + 128):
    R1 at TP=8, 34,816 vs 10,240. A 1,000-token prompt's pairs are prefill pairs but its last token's one."""
    r1 = StepModel("DeepSeek-R1", "H200", tp=8)
    layers = 61
    assert r1.attn_flops_per_pair == 2 * 16 * (576 + 512) * layers
    assert r1.prefill_attn_flops_per_pair == 2 * 16 * (128 + 64 + 128) * layers
    pairs = 1000 * 1001 / 2
    assert float(r1.attention_flops(pairs, 0, 1)) == pytest.approx((pairs - 1) * 10240 * layers + 34816 * layers)
    # decode: one pair per cached token plus its own: all absorbed
    assert float(r1.attention_flops(64 * 2001, 64 * 2000, 64)) == pytest.approx(64 * 2001 * 34816 * layers)
    dense = StepModel("8B", "H200")
    assert float(dense.attention_flops(pairs, 0, 1)) == pytest.approx(pairs * dense.attn_flops_per_pair)


def test_pp_round_pays_the_host_step_per_micro_batch_not_per_stage() -> None:
    """A PP=4 round of one micro-batch: 4 stage device times + ONE host step + 4 hand-offs (the host schedules,
    prepares and samples once per micro-batch; before, every stage paid it). With 4 micro-batches the host's steps
    overlap the stages: max(p·g + h, m·h + g)."""
    cal = Calibration(step_overhead_s=0.01, per_seq_overhead_s=0.0, pp_handoff_latency_s=0.0)
    sm = StepModel("8B", "H200", pp=4, calibration=cal, max_num_batched_tokens=64)
    one_stage = StepModel("8B", "H200", pp=4, calibration=cal).stage_cost(16, 16 * 1000, 16 * 1000, 16)
    g = float(one_stage.time_s) - 0.01
    handoff = 16 * 4096 * 2 / sm.link_bw
    one = sm.round_cost(16, 16 * 1000, 16 * 1000, 16)  # 16 tokens within the 64-token budget: one micro-batch
    assert float(one.time_s) == pytest.approx(4 * g + 0.01 + 4 * handoff, rel=1e-9)
    full = sm.round_cost(256, 256 * 1000, 256 * 1000, 256)  # 256 tokens / 64: four micro-batches of 64
    stage64 = sm.stage_cost(64, 64 * 1000, 64 * 1000, 64)
    g64 = float(stage64.time_s) - 0.01
    expected = max(4 * g64 + 0.01, 4 * 0.01 + g64) + 4 * (64 * 4096 * 2 / sm.link_bw)
    assert float(full.time_s) == pytest.approx(expected, rel=1e-9)


def test_async_scheduling_overlaps_the_host_with_a_one_stage_gpu_step() -> None:
    """vLLM's async scheduling: the host's part of a step (step and per-sequence overheads) runs beside the device's,
    so the step takes the longer of the two; synchronous, their sum. A PP round and a CPU host are left as they are."""
    cal = Calibration(step_overhead_s=0.004, per_seq_overhead_s=2e-5)
    sync = StepModel("8B", "H200", calibration=cal)
    overlapped = StepModel("8B", "H200", calibration=cal, async_scheduling=True)
    for seqs in (8, 256, 4096):  # device-bound, then host-bound (4096 × 20 µs + 4 ms = 86 ms)
        s = sync.stage_cost(seqs, seqs * 1000, seqs * 1000, seqs)
        a = overlapped.stage_cost(seqs, seqs * 1000, seqs * 1000, seqs)
        host = 0.004 + 2e-5 * seqs
        device = float(s.time_s) - host
        assert float(a.time_s) == pytest.approx(max(device, host), rel=1e-9)
        assert float(a.time_s) < float(s.time_s)
    pp = StepModel("8B", "H200", pp=2, calibration=cal, async_scheduling=True)
    assert (
        pp.round_cost(64, 64_000, 64_000, 64).time_s
        == StepModel("8B", "H200", pp=2, calibration=cal).round_cost(64, 64_000, 64_000, 64).time_s
    )
    host_cpu = load_gpu("cpu-host")
    cpu_sync = StepModel("tiny-llama-4l", host_cpu, calibration=cal).decode_step_s(8, 256)
    cpu_async = StepModel("tiny-llama-4l", host_cpu, calibration=cal, async_scheduling=True)
    assert cpu_async.decode_step_s(8, 256) == cpu_sync


def test_a_tp_group_without_peer_access_prices_its_all_reduce_at_pcie() -> None:
    """Only the collectives move: a TP=2 A100 step's all-reduce takes the NVLink time × 300/32 (bandwidth term; the
    latency term is the device's either way), its compute and memory parts are unchanged, and a one-GPU step is
    unchanged."""
    from engine.catalog import without_peer_to_peer

    cal = Calibration(link_efficiency=0.5)
    a100 = load_gpu("A100-80GB")
    nvlink = StepModel("8B", a100, tp=2, calibration=cal)
    pcie = StepModel("8B", without_peer_to_peer(a100), tp=2, calibration=cal)
    payload = 4096 * nvlink.allreduce_bytes_per_token
    alpha = 2 * (2 - 1) * a100.link_latency_s
    assert pcie.allreduce_s(payload) - alpha == pytest.approx((nvlink.allreduce_s(payload) - alpha) * 300 / 32)
    s, p = nvlink.stage_cost(4096, 4096e3, 4096e3, 64), pcie.stage_cost(4096, 4096e3, 4096e3, 64)
    assert (float(p.compute_s), float(p.memory_s)) == (float(s.compute_s), float(s.memory_s))
    assert float(p.comm_s) > 5 * float(s.comm_s)
    one = StepModel("8B", a100, calibration=cal).stage_cost(64, 64e3, 64e3, 64).time_s
    assert StepModel("8B", without_peer_to_peer(a100), calibration=cal).stage_cost(64, 64e3, 64e3, 64).time_s == one


@pytest.mark.parametrize(("model", "gpu", "tp"), [("gpt-oss-120b", "H100", 1), ("gpt-oss-120b", "A100-80GB", 1),
                                                  ("DeepSeek-R1", "H200", 8), ("Qwen3-8B", "H100", 1)])  # fmt: skip
def test_a_step_reads_the_weights_the_memory_plan_loads(model: str, gpu: str, tp: int) -> None:
    """Every weight once per step (the LM head or the embedding, not both; the rope cache is not read), at the bytes
    the memory plan loads: MXFP4 experts at 17/32 of a byte padded for the device's kernel (Triton on an H100, Marlin
    on an A100), not at the 16-bit of gpt-oss's attention — priced at 2 bytes they made its decode steps 2.8× too
    slow (239 GB a step of 100 sequences against 82)."""
    from engine.catalog import load_model
    from engine.memory import memory_plan

    step = StepModel(model, gpu, tp=tp)
    params = load_model(model).params
    read = step.fixed_weight_bytes + step.routed_weight_bytes + min(params.embedding, params.lm_head) * 2 / tp
    assert read == pytest.approx(memory_plan(model, gpu, tp=tp).weights_bytes_per_device, rel=1e-3)


def test_sliding_window_layers_read_their_window_only() -> None:
    """gpt-oss-120b: 18 of 36 layers attend to the last 128 tokens. 30 decodes at 2,050 tokens of context read
    2,050 cached tokens a sequence on the full layers and 128 on the sliding ones; a 8,192-token prompt pairs each
    query with at most 128 keys there. A model without sliding layers is priced as before."""
    sm = StepModel("gpt-oss-120b", "H100")
    assert (sm.sliding_share, sm.sliding_window) == (0.5, 128)
    pairs, read = sm.sliding_context(30, 30 * 2050, 30 * 2050, 30)
    assert float(read) == pytest.approx(0.5 * 30 * 2050 + 0.5 * 30 * 128)
    assert float(pairs) == pytest.approx(0.5 * 30 * 2050 + 0.5 * 30 * 128)
    pairs, read = sm.sliding_context(8192, 8192 * 8192 / 2, 0, 1)
    assert float(pairs) == pytest.approx(0.5 * 8192 * 8192 / 2 + 0.5 * 8192 * 128) and float(read) == 0.0
    long_ctx, short_ctx = sm.stage_cost(30, 30 * 32050, 30 * 32050, 30), sm.stage_cost(30, 30 * 2050, 30 * 2050, 30)
    kv_per_token = sm.kv_bytes_per_token_dev
    assert float(long_ctx.bytes_moved - short_ctx.bytes_moved) == pytest.approx(0.5 * 30 * 30000 * kv_per_token)
    dense = StepModel("8B", "H200")
    assert dense.sliding_share == 0.0 and dense.sliding_context(4, 100.0, 90.0, 2) == (100.0, 90.0)
