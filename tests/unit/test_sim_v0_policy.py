"""vLLM V0's scheduler without chunked prefill (``Scenario.enable_chunked_prefill=False``): whole prompts only, a
step that admits any prompt runs no decode, V0's block-manager watermark. Hand-worked cases on the reference
scheduler and the fast simulator, drawn workloads on both, and the same scenario under both policies."""

import random
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.sim.config as sim
from engine.scenario import Scenario, scenario_from_params, scenario_to_params
from engine.sim.parity import (
    Workload,
    WorkloadRequest,
    draw_v0_workload,
    reference_outcome,
    run_fast,
    run_reference,
)
from engine.sim.reference import SchedulerConfig
from engine.simulate import predict

V0 = SchedulerConfig(
    max_num_seqs=8, max_num_batched_tokens=64, block_size=16, num_gpu_blocks=1 + 64, enable_prefix_caching=False,
    enable_chunked_prefill=False,
)  # fmt: skip


def fast(workload: Workload, windows: bool):  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sim, "USE_DECODE_WINDOWS", windows)
        return run_fast(workload)


def test_a_prefill_step_runs_no_decode() -> None:
    """Three 32-token prompts, 3 tokens each, a 64-token budget. Step 1 prefills r0 and r1 whole (the budget is
    spent; r2 waits); step 2 prefills r2 ALONE — r0 and r1 do not decode; steps 3 and 4 decode all three, which
    finish together at step 4 (V1 would decode r0 and r1 beside r2's prompt in step 2)."""
    workload = Workload(tuple(WorkloadRequest(32, 3) for _ in range(3)), V0)
    records = run_reference(workload)
    assert [r.scheduled for r in records] == [
        ((0, 32), (1, 32)),
        ((2, 32),),
        ((0, 1), (1, 1), (2, 1)),
        ((0, 1), (1, 1), (2, 1)),
    ]
    expected = reference_outcome(workload, records)
    assert expected.finished_step == (4, 4, 4)
    for windows in (False, True):
        assert fast(workload, windows) == expected
    v1 = replace(V0, enable_chunked_prefill=True, enable_prefix_caching=False)
    assert reference_outcome(Workload(workload.requests, v1), run_reference(Workload(workload.requests, v1))) != (
        expected
    )


def test_a_decode_preempts_the_tail_and_the_victim_waits_for_its_whole_sequence() -> None:
    """Two 32-token prompts (2 blocks each) of 20 tokens in a 4-block pool. Step 1 prefills both (0 blocks
    free); step 2 r0's 33rd token needs a block: r1 (the tail) is preempted and r0 decodes alone. r1 must
    recompute 33 tokens (3 blocks) and only 1 is free, so it waits until r0 finishes at step 20 (its 1st token
    came from the prefill, 19 decodes follow); step 21 re-prefills r1 (its 2nd token), 18 decodes finish it at 39."""
    workload = Workload((WorkloadRequest(32, 20), WorkloadRequest(32, 20)), replace(V0, num_gpu_blocks=1 + 4))
    expected = reference_outcome(workload, run_reference(workload))
    assert expected.finished_step == (20, 39)
    assert expected.num_preemptions == (0, 1)
    for windows in (False, True):
        assert fast(workload, windows) == expected


def test_the_watermark_holds_an_admission_back() -> None:
    """V0's ``can_allocate``: a prompt is admitted only if the watermark stays free. 65 blocks at a 5 % watermark
    keep 3 back: two 512-token prompts (32 blocks each) leave 0, so the second waits for the first."""
    config = replace(V0, max_num_batched_tokens=1024, watermark=0.05)
    workload = Workload((WorkloadRequest(512, 2), WorkloadRequest(512, 2)), config)
    records = run_reference(workload)
    assert records[0].scheduled == ((0, 512),)
    no_watermark = Workload(workload.requests, replace(config, watermark=0.0))
    assert run_reference(no_watermark)[0].scheduled == ((0, 512), (1, 512))
    for windows in (False, True):
        assert fast(workload, windows) == reference_outcome(workload, records)


@settings(max_examples=80, deadline=None)
@given(rng=st.randoms(use_true_random=False), windows=st.booleans())
def test_fast_simulator_takes_the_v0_reference_steps(rng: random.Random, windows: bool) -> None:
    workload = draw_v0_workload(rng, max_requests=16, max_tokens=120)
    assert fast(workload, windows) == reference_outcome(workload, run_reference(workload))


def test_prefill_only_steps_stall_decodes_in_a_full_prediction() -> None:
    """The same Poisson client (1,024-token prompts at 20/s) under both policies: V0's prefill-only steps make each
    admission a step in which no running request decodes, so TPOT rises; output is conserved either way."""
    s = Scenario(
        model="DeepSeek-R1-Distill-Llama-8B", gpu="H100", num_requests=96, workload="fixed:1024,128",
        request_rate=20.0, max_num_batched_tokens=131072,
    )  # fmt: skip
    v1, v0 = predict(s), predict(replace(s, enable_chunked_prefill=False))
    assert v0.summary.generated_tokens == v1.summary.generated_tokens == 96 * 128
    tpot = [float(np.nanmean(p.requests["tpot_s"].to_numpy())) for p in (v1, v0)]
    assert tpot[1] > tpot[0]


def test_a_prompt_longer_than_the_budget_is_an_error_naming_the_flag() -> None:
    s = Scenario(model="DeepSeek-R1-Distill-Llama-8B", gpu="H100", num_requests=4, workload="fixed:4096,8",
                 max_num_batched_tokens=2048, enable_chunked_prefill=False)  # fmt: skip
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        predict(s)


def test_the_policy_travels_in_links() -> None:
    s = Scenario(enable_chunked_prefill=False)
    params = scenario_to_params(s)
    assert params["enable_chunked_prefill"] == "false"
    back, notices = scenario_from_params(params)
    assert back.enable_chunked_prefill is False and not notices
    assert "enable_chunked_prefill" not in scenario_to_params(Scenario())


def test_v0_decode_windows_give_the_step_by_step_run() -> None:
    """A closed-loop client over a pool that holds a few requests: the V0 driver's decode windows (nothing waiting,
    or a head request that cannot be admitted before a finish or preemption) give the step-by-step run's figures."""
    s = Scenario(
        model="DeepSeek-R1-Distill-Llama-8B", gpu="H100", num_requests=60, workload="fixed:700,300",
        max_concurrency=24, max_num_batched_tokens=8192, enable_chunked_prefill=False, max_model_len=4096,
        kv_cache_memory_bytes=128 * 1024 * 12 * 1024,  # 12,288 tokens at 128 KiB a token
    )  # fmt: skip
    by_window = predict(s, requests=np.tile([700, 300], (60, 1)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sim, "USE_DECODE_WINDOWS", False)
        by_step = predict(s, requests=np.tile([700, 300], (60, 1)))
    assert by_step.summary.preemptions > 0
    for col in ("first_token_s", "finished_s"):
        assert np.allclose(by_window.requests[col].to_numpy(), by_step.requests[col].to_numpy(), rtol=1e-9)
    assert by_window.summary.preemptions == by_step.summary.preemptions
