import math

import pytest

from engine.catalog import load_model
from engine.memory import memory_plan, memory_plan_for, pp_layer_split
from engine.scenario import Scenario

KV_BYTES = {
    "DeepSeek-R1-Distill-Llama-8B": 131_072,
    "DeepSeek-R1-Distill-Qwen-14B": 196_608,
    "DeepSeek-R1-Distill-Qwen-32B": 262_144,
    "DeepSeek-R1-Distill-Llama-70B": 327_680,
    "Llama-3.1-405B": 516_096,
    "DeepSeek-R1": 70_272,
}


@pytest.mark.parametrize(("name", "expected"), sorted(KV_BYTES.items()))
def test_kv_bytes_per_token_hand_computed(name: str, expected: int) -> None:
    assert load_model(name).kv_bytes_per_token(2) == expected
    plan = memory_plan(name, "H200", tp=8)
    assert plan.kv_bytes_per_token == expected


def test_fp8_kv_halves_bytes() -> None:
    assert memory_plan("8B", "H200", kv_cache_dtype="fp8").kv_bytes_per_token == 65_536


def test_kv_heads_sharded_and_replicated_and_mla_replicated() -> None:
    # 8 KV heads: TP=8 → 1 head per GPU; TP=16 would replicate (max(1, 8 // 16) = 1).
    assert memory_plan("70B", "H200", tp=8).kv_bytes_per_token_per_device == 80 * 2 * 1 * 128 * 2
    assert memory_plan("8B", "H200", tp=2).kv_bytes_per_token_per_device == 32 * 2 * 4 * 128 * 2
    # MLA latent is cached whole on every TP rank.
    assert memory_plan("R1", "H200", tp=8).kv_bytes_per_token_per_device == 70_272
    # PP: a stage holds only its layers; vLLM gives the remainder to the stages before the last.
    assert pp_layer_split(61, 4) == [15, 15, 16, 15]
    assert pp_layer_split(126, 8) == [15, 16, 16, 16, 16, 16, 16, 15]


def test_vllm_block_count_rule_with_fixed_pool() -> None:
    # As vLLM: blocks = pool // (block_size · per-layer bytes) // layers; tokens = blocks · block_size.
    pool = 4 * 1024**3
    plan = memory_plan("8B", "H200", kv_cache_memory_bytes=pool, block_size=16)
    page = 16 * 2 * 8 * 128 * 2
    assert plan.kv_blocks == pool // page // 32 == 2048
    assert plan.kv_capacity_tokens == 32_768
    assert plan.usable_kv_blocks == 2047
    assert plan.max_concurrency == pytest.approx(2048 / math.ceil(131072 / 16))


def test_vllm_block_count_from_memory() -> None:
    plan = memory_plan("8B", "H200", gpu_memory_utilization=0.9)
    requested = math.ceil(150_754_820_096 * 0.9)
    used = plan.weights_bytes_per_device + plan.activation_bytes_per_device + plan.non_torch_bytes_per_device
    # vLLM >= 0.21 (the default rules, installed 0.32.0) profiles CUDA-graph memory before sizing the KV cache.
    assert plan.cudagraph_subtracted and plan.vllm_version == "0.32.0"
    used += plan.cudagraph_bytes_per_device
    avail = requested - used
    assert plan.free_bytes_per_device == avail
    assert plan.kv_blocks == avail // (16 * 2 * 8 * 128 * 2) // 32
    assert plan.weights_bytes_per_device / 1024**3 == pytest.approx(14.96, abs=0.05)  # vLLM logs 14.99 GiB


def test_infeasible_layouts_say_why() -> None:
    p = memory_plan("405B", "H200")
    assert not p.feasible and "weights need" in p.reason and p.kv_bytes_per_token == 516_096
    p = memory_plan("14B", "H200", tp=3)
    assert not p.feasible and "divisible" in p.reason
    p = memory_plan("8B", "H200", tp=16)
    assert not p.feasible and "node" in p.reason
    p = memory_plan("70B", "H100", tp=2, max_model_len=131072, gpu_memory_utilization=0.5)
    assert not p.feasible


def test_405b_note_explains_paper_difference() -> None:
    p = memory_plan("405B", "H200", tp=8)
    assert p.feasible and any("paper" in n for n in p.notes)


def test_more_tp_more_capacity_for_32b() -> None:
    caps = [memory_plan("32B", "H200", tp=t).kv_capacity_tokens for t in (1, 2, 4, 8)]
    assert caps == sorted(caps) and caps[1] > 2 * caps[0]


def test_memory_plan_for_scenario_and_custom_device() -> None:
    s = Scenario(model="DeepSeek-R1-Distill-Qwen-14B", gpu="custom", gpu_mem_gib=80, dp=2, gpus=2)
    p = memory_plan_for(s)
    assert p.feasible and p.dp == 2 and p.kv_capacity_tokens_total == 2 * p.kv_capacity_tokens
