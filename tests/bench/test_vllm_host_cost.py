"""The host cost per running request per step of vLLM's own V1 scheduler, measured: the figure behind the GPU fits'
ceiling on ``per_seq_overhead_s`` (``engine.fidelity.calibrate.GPU_BOUNDS``).

vLLM's ``Scheduler`` runs without a model (``engine.sim.parity.VllmScheduler``, the parity harness's driver): N
requests decode together, and each step's ``schedule()`` + ``update_from_output()`` is timed, with the synthetic
runner output the harness builds per request (so the figure errs high). The engine core's other per-request work
per step (the model runner's state updates and input preparation) is not in it: the ceiling leaves room for it.
"""

import statistics
import time

import pytest

from engine.fidelity.calibrate import GPU_BOUNDS
from engine.sim.parity import VllmScheduler, WorkloadRequest
from engine.sim.reference import SchedulerConfig

pytestmark = pytest.mark.bench

STEPS = 40


def _per_request_s(num_running: int) -> float:
    """Median host seconds per running request of one decode step with ``num_running`` requests decoding."""
    config = SchedulerConfig(
        block_size=16,
        num_gpu_blocks=num_running * 40 + 100,  # ample: no preemption
        max_num_seqs=num_running,
        max_num_batched_tokens=max(8192, 20 * num_running),
        enable_prefix_caching=True,
    )
    scheduler = VllmScheduler(config)
    for i in range(num_running):
        scheduler.add(i, WorkloadRequest(num_prompt_tokens=16, max_tokens=STEPS + 100))
    for _ in range(3):  # the prefills, then every request decodes
        scheduler.step()
    times = []
    for _ in range(STEPS):
        t = time.perf_counter()
        scheduler.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times) / num_running


@pytest.mark.parametrize("num_running", [256, 1024])
def test_vllm_scheduler_host_cost_per_request(num_running: int) -> None:
    per_request = _per_request_s(num_running)
    ceiling = GPU_BOUNDS["per_seq_overhead_s"][1]
    print(
        f"\nvLLM V1 Scheduler, {num_running} decoding requests: {per_request * 1e6:.1f} µs per request per step "
        f"(schedule + update_from_output); GPU fits' per_seq_overhead_s ceiling {ceiling * 1e6:.0f} µs"
    )
    assert per_request <= ceiling / 2, "the ceiling must leave room for the model runner's per-request work"
