"""cliffscope's reference scheduler against vLLM's real V1 Scheduler (no model), step for step.

Every step's scheduled (request, tokens), preempted and finished ids must be the same, on 200 Hypothesis-drawn
workloads (their sizes kept small so the tier stays under a minute: ~100 steps each) and on fixed cases through
heavy preemption, long chunked prompts (500–1,000 tokens), a watermark and the full-sequence gate turned off. Each
compared workload also holds cliffscope's fast simulator to the reference (finish step and preemptions per request).
"""

import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.sim.parity import VLLM_VERSION, Workload, WorkloadRequest, compare, draw_workload, installed_vllm_version
from engine.sim.reference import SchedulerConfig

pytestmark = pytest.mark.vllm

# vLLM inspects the model class once per cache root (a subprocess, ~1-2 min here); the collectors' root keeps it.
os.environ.setdefault("VLLM_CACHE_ROOT", str(Path.home() / ".cache" / "cliffscope-vllm"))

LONG_PROMPTS = tuple(
    WorkloadRequest(p, 64) for p in (932, 697, 888, 955, 715, 520, 632, 994, 761, 748, 707, 970)
)  # 500–1,000 tokens, drawn uniformly (seed 0): long chunked prefills
HEAVY = tuple(WorkloadRequest(32 + 8 * (i % 5), 160, arrival_step=(i // 16) * 20) for i in range(40))


def test_installed_vllm_is_the_pinned_one() -> None:
    """The parity below holds for VLLM_VERSION (recorded on the Methods page); a new vLLM must be re-checked."""
    assert installed_vllm_version() == VLLM_VERSION


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False))
def test_reference_takes_vllms_steps_on_drawn_workloads(rng: random.Random) -> None:
    workload = draw_workload(rng, max_requests=8, max_tokens=32)
    result = compare(workload)
    assert result.mismatched_steps == 0, result.first_mismatch
    assert result.fast_matches


CASES = {
    "heavy-preemption-caching": Workload(HEAVY, SchedulerConfig(40, 512, 16, num_gpu_blocks=100)),
    "heavy-preemption-no-caching": Workload(
        HEAVY, SchedulerConfig(40, 512, 16, num_gpu_blocks=100, enable_prefix_caching=False)
    ),
    "long-prompts-256": Workload(LONG_PROMPTS, SchedulerConfig(16, 256, 16, num_gpu_blocks=131)),
    "long-prompts-first-chunk-gate": Workload(
        LONG_PROMPTS, SchedulerConfig(16, 256, 16, num_gpu_blocks=131, scheduler_reserve_full_isl=False)
    ),
    "watermark": Workload(HEAVY[:24], SchedulerConfig(24, 256, 16, num_gpu_blocks=60, watermark=0.1)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_takes_vllms_steps_on_fixed_cases(name: str) -> None:
    workload = CASES[name]
    result = compare(workload)
    assert result.mismatched_steps == 0, result.first_mismatch
    assert result.fast_matches in (True, None)  # None: the fast simulator models neither a watermark nor the gate off
    if name.startswith("heavy"):
        assert result.preemptions > 50
    if name == "long-prompts-256":
        assert result.preemptions == 0
    if name == "long-prompts-first-chunk-gate":
        assert result.preemptions > 0


def test_block_size_32_as_the_cpu_backend_wants() -> None:
    workload = Workload(HEAVY, SchedulerConfig(40, 512, 32, num_gpu_blocks=50))
    result = compare(workload)
    assert result.mismatched_steps == 0, result.first_mismatch
    assert result.preemptions > 20
