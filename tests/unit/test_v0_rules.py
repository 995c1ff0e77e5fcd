"""vLLM V0's scheduler defaults by version, model and platform (engine.vllm_rules.v0_scheduler_flags), and the
published bench records that take them (engine.fidelity.published_fit.bench_case)."""

from __future__ import annotations

import pytest

from engine.fidelity.published_fit import bench_case, load_records, served_module
from engine.vllm_rules import v0_scheduler_flags


@pytest.mark.parametrize(
    ("version", "mla", "max_len", "rocm", "chunked", "budget"),
    [
        ("0.7.4.dev181+gf35f8e22", True, 163840, False, False, 163840),  # dstack's H200 build: MLA forces it off
        ("0.7.3.dev138+g21f6ca217", True, 32768, True, False, 32768),  # ROCm: never on by default in V0
        ("0.7.3", True, 163840, False, False, 2048),  # 0.7.3 on CUDA: budget derived before MLA turned it off
        ("0.7.3", False, 131072, False, True, 2048),  # a long-context model on CUDA: chunked, 2048
        ("0.6.2", False, 131072, True, False, 131072),  # the same on ROCm: the whole context per step
        ("0.7.2", False, 8192, False, False, 8192),  # short context: max(max_model_len, 2048)
        ("0.7.2", False, 1024, False, False, 2048),
    ],
)
def test_v0_scheduler_flags_by_version(version, mla, max_len, rocm, chunked, budget) -> None:  # type: ignore[no-untyped-def]
    flags = v0_scheduler_flags(version, use_mla=mla, max_model_len=max_len, rocm=rocm)
    assert flags is not None
    assert (flags.enable_chunked_prefill, flags.max_num_batched_tokens) == (chunked, budget)
    assert flags.max_num_seqs == 256 and flags.enable_prefix_caching is False


@pytest.mark.parametrize("version", ["0.8.0", "0.11.0", "0.32.0"])
def test_v1_releases_take_no_v0_flags(version: str) -> None:
    assert v0_scheduler_flags(version, use_mla=True, max_model_len=163840, rocm=False) is None


def test_a_v0_mla_bench_record_runs_v0s_scheduler_and_says_which_rule_set_it() -> None:
    records = {r.id: r for r in load_records(kind="bench")}
    h200 = bench_case(records["dstack-r1-h200-tp8-random-3200-800-c128"], served_module())
    s = h200.scenario
    assert (s.enable_chunked_prefill, s.max_num_batched_tokens, s.max_num_seqs) == (False, 163840, 256)
    for flag in ("max_num_batched_tokens", "enable_chunked_prefill", "max_num_seqs", "enable_prefix_caching"):
        assert "v0_scheduler_flags" in str(h200.defaults[flag]), flag
    mi300x = bench_case(records["dstack-r1-mi300x-tp8-random-3200-800-c128"], served_module())
    assert (mi300x.scenario.enable_chunked_prefill, mi300x.scenario.max_num_batched_tokens) == (False, 32768)
    v1 = bench_case(records["gpustack-r1-0528-h200-tp8-random-128"], served_module())
    assert v1.scenario.enable_chunked_prefill is True
    assert "v0_scheduler_flags" not in str(v1.defaults)


def test_async_scheduling_follows_the_record_or_its_release() -> None:
    """A bench record's async scheduling: as stated, else its release's default (on from 0.14 for one-stage
    engines; PP rounds already overlap the host), listed among the defaults it took."""
    from engine.vllm_rules import async_scheduling_default

    assert async_scheduling_default("0.13.0", 1)[0] is False
    assert async_scheduling_default("0.15.1", 1)[0] is True
    assert async_scheduling_default("0.18.0", 2)[0] is False
    records = {r.id: r for r in load_records(kind="bench")}
    runpod = bench_case(records["runpod-qwen3-8b-h100-tp1-baseline-random-512-256-rps50-c256"], served_module())
    assert runpod.scenario.async_scheduling is True
    assert runpod.defaults["async_scheduling"].startswith("True (vLLM ≥ 0.14")
    stated = bench_case(records["gpustack-gpt-oss-120b-a100-tp1-async-mnbt4096-random-128"], served_module())
    assert stated.scenario.async_scheduling is True and "async_scheduling" not in stated.defaults
    v011 = bench_case(records["gpustack-r1-0528-h200-tp8-random-128"], served_module())
    assert v011.scenario.async_scheduling is False


def test_a_record_whose_log_lacks_gpu_peer_access_is_predicted_without_it() -> None:
    """Dennis Lee's two A100s (Kubernetes pods on one node) have no peer access: the start-up log the TP=2 records
    quote warns that custom all-reduce is disabled for it, so their scenario runs without peer-to-peer (collectives
    over PCIe, engine.catalog.without_peer_to_peer); the one-GPU records and NVLink hosts keep it."""
    records = {r.id: r for r in load_records(kind="bench")}
    served = served_module()
    pods = [r for r in records if r.startswith("dennislee-") and "-tp2-" in r]
    assert len(pods) == 8
    for rid in pods:
        assert bench_case(records[rid], served).scenario.peer_to_peer is False, rid
    one_gpu = records["dennislee-qwen2-7b-a100-tp1-util025-random-1024-1024-n100"]
    assert bench_case(one_gpu, served).scenario.peer_to_peer
    assert bench_case(records["gpustack-qwen3-235b-2507-a100-tp8-random-2k"], served).scenario.peer_to_peer


def test_a_bench_record_takes_vllms_scheduler_defaults_of_its_device() -> None:
    """Unstated max_num_seqs and max_num_batched_tokens take engine.vllm_rules.scheduler_defaults, the rule the
    start-up logs are sized by: through the OpenAI server vLLM 0.11 runs 256 sequences and a 2,048-token budget on an
    A100 (dennislee22's 0.10.1.1 A100 logs print "Chunked prefill is enabled with max_num_batched_tokens=2048") and
    1,024 and 8,192 on an H100; a record that states them keeps its own."""
    records = {r.id: r for r in load_records(kind="bench")}
    served = served_module()
    a100 = bench_case(records["gpustack-qwen3-14b-a100-tp1-random-128"], served)
    assert (a100.scenario.max_num_seqs, a100.scenario.max_num_batched_tokens) == (256, 2048)
    assert a100.defaults["max_num_seqs"] == 256 and a100.defaults["max_num_batched_tokens"] == 2048
    h100 = bench_case(records["gpustack-qwen3-14b-h100-tp1-random-128"], served)
    assert (h100.scenario.max_num_seqs, h100.scenario.max_num_batched_tokens) == (1024, 8192)
    stated = bench_case(records["gpustack-gpt-oss-120b-a100-tp1-async-mnbt4096-random-128"], served)
    assert stated.scenario.max_num_batched_tokens == 4096 and "max_num_batched_tokens" not in stated.defaults
