"""The reference scheduler's rules (vLLM V1's, see engine.sim.reference) and cliffscope's fast simulator held to it.

The reference itself is held to vLLM's real scheduler in tests/integration/test_sim_parity.py (`vllm` tier); here
every path of the fast simulator — the general step, the decode window's Python loop and its compiled loop — must
give the reference's finish step and preemption count for every request of drawn and fixed workloads."""

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.sim.config as sim
from engine.sim.parity import Workload, WorkloadRequest, draw_workload, reference_outcome, run_fast, run_reference
from engine.sim.reference import Request, RequestStatus, Scheduler, SchedulerConfig

LOOPS = ("general", "python", "compiled")
# Long chunked prefills: 500–1,000-token prompts (drawn uniformly, seed 0) under a 256-token budget (chunked prefill).
LONG_PROMPTS = tuple(WorkloadRequest(p, 64) for p in (932, 697, 888, 955, 715, 520, 632, 994, 761, 748, 707, 970))
LONG_PROMPT_CONFIG = SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=256, block_size=16, num_gpu_blocks=131)
HEAVY = tuple(WorkloadRequest(64 + 8 * (i % 5), 300) for i in range(48))
HEAVY_CONFIG = SchedulerConfig(max_num_seqs=48, max_num_batched_tokens=512, block_size=16, num_gpu_blocks=90)


def fast(workload: Workload, loop: str):  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as mp:
        if loop == "general":
            mp.setattr(sim, "USE_DECODE_WINDOWS", False)
        else:
            mp.setattr(sim, "WINDOW_LOOP", loop)
        return run_fast(workload)


@settings(max_examples=80, deadline=None)
@given(rng=st.randoms(use_true_random=False), loop=st.sampled_from(LOOPS))
def test_fast_simulator_takes_the_reference_steps(rng: random.Random, loop: str) -> None:
    """Drawn workloads: pools from ample to starved, budgets 16–2,048, staggered arrivals, caching on and off (the
    `vllm` tier's parity test checks the fast simulator on 200 more, beside vLLM's own scheduler)."""
    workload = draw_workload(rng, max_requests=16, max_tokens=120)
    assert fast(workload, loop) == reference_outcome(workload, run_reference(workload))


@pytest.mark.parametrize("caching", [True, False])
def test_fast_simulator_through_heavy_preemption(caching: bool) -> None:
    workload = Workload(HEAVY, replace(HEAVY_CONFIG, enable_prefix_caching=caching))
    expected = reference_outcome(workload, run_reference(workload))
    assert sum(expected.num_preemptions) > 100
    for loop in LOOPS:
        assert fast(workload, loop) == expected, loop


def _running_peak_and_preemptions(workload: Workload) -> tuple[int, int]:
    scheduler = Scheduler(workload.config)
    for i, r in enumerate(workload.requests):
        scheduler.add_request(Request(i, r.num_prompt_tokens, r.max_tokens))
    peak = preempted = 0
    while scheduler.has_requests():
        record = scheduler.step()
        peak = max(peak, len(scheduler.running) + len(record.finished))
        preempted += len(record.preempted)
    return peak, preempted


@pytest.mark.parametrize("budget", [256, 512])
def test_long_prompts_admitted_only_when_their_whole_sequence_fits(budget: int) -> None:
    """vLLM's scheduler_reserve_full_isl (on by default): a waiting request needs blocks for all its tokens, not
    its first chunk. Off, chunked prefill admits long prompts whose later chunks do not fit: preemptions."""
    config = replace(LONG_PROMPT_CONFIG, max_num_batched_tokens=budget)
    gated = Workload(LONG_PROMPTS, config)
    assert _running_peak_and_preemptions(gated) == (3, 0)
    peak, preempted = _running_peak_and_preemptions(
        Workload(LONG_PROMPTS, replace(config, scheduler_reserve_full_isl=False))
    )
    assert peak >= 3 and preempted > 0
    expected = reference_outcome(gated, run_reference(gated))
    for loop in LOOPS:
        assert fast(gated, loop) == expected, loop


def _admit(scheduler: Scheduler, request: Request) -> bool:
    """Add the request and take one step: was it scheduled?"""
    scheduler.add_request(request)
    record = scheduler.step()
    return request.request_id in dict(record.scheduled)


def test_null_block_is_never_handed_out() -> None:
    """vLLM reserves block 0: a pool of 1 + n blocks holds n blocks of tokens."""
    config = SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=64, block_size=16, num_gpu_blocks=5)
    scheduler = Scheduler(config)
    pool = scheduler.kv_cache_manager.block_pool
    assert pool.get_num_free_blocks() == 4 and pool.null_block.block_id == 0
    assert not _admit(scheduler, Request(0, 65, 1))  # 65 tokens: 5 blocks
    assert _admit(Scheduler(config), Request(0, 64, 1))


def test_watermark_holds_blocks_back_once_anything_runs() -> None:
    """watermark × num_gpu_blocks stay free when admitting, unless nothing runs (vLLM's has_scheduled_reqs)."""
    config = SchedulerConfig(8, 256, 16, num_gpu_blocks=20, watermark=0.25)  # 5 blocks held back
    scheduler = Scheduler(config)
    assert _admit(scheduler, Request(0, 16 * 16, 4))  # 16 of 19 free blocks: alone, the watermark does not apply
    other = Scheduler(config)
    assert _admit(other, Request(0, 16, 100))  # 1 block
    assert not _admit(other, Request(1, 16 * 14, 4))  # 14 blocks + 5 > 18 free
    assert _admit(Scheduler(replace(config, watermark=0.0)), Request(1, 16 * 18, 4))


def test_preempted_request_hits_its_full_blocks_and_its_partial_block_is_reused_first() -> None:
    """A preempted request's hashed (full) blocks join the free queue's back, last block first; its partial last
    block (no hash) goes to the front. Re-admitted, it finds its full blocks cached (at most num_tokens − 1 tokens)."""
    config = SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=64, block_size=16, num_gpu_blocks=11)
    scheduler = Scheduler(config)
    request = Request(0, 40, 10)
    assert _admit(scheduler, request)  # 40 tokens computed (+1 sampled): blocks 0, 1 full, block 2 partial
    manager = scheduler.kv_cache_manager
    blocks = list(manager.req_to_blocks[0])
    scheduler.running.remove(request)
    scheduler._preempt_request(request)
    queue = list(manager.block_pool.free_block_queue.values())
    assert queue[0] is blocks[2] and queue[-2:] == [blocks[1], blocks[0]]
    assert request.status is RequestStatus.PREEMPTED and request.num_computed_tokens == 0
    hits, hit_tokens = manager.get_computed_blocks(request)
    assert hits == blocks[:2] and hit_tokens == 32
    scheduled, _ = scheduler.schedule()
    assert scheduled == {0: 41 - 32} and request.num_computed_tokens == 41
