import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.memory import memory_plan_for
from engine.scenario import Scenario
from engine.simulate import REQUEST_COLUMNS, TIMELINE_COLUMNS, Prediction, SimulationError, predict
from engine.summary import SUMMARY_KEYS
from engine.workload import request_lengths


def small(pool_bytes: int, model: str, **kw: object) -> Scenario:
    base = dict(
        model=model,
        gpu="cpu-host",
        kv_cache_memory_bytes=pool_bytes,
        block_size=32,
        num_requests=64,
        workload="fixed:64,512",
        max_num_seqs=64,
        max_num_batched_tokens=2048,
        max_model_len=4096,
    )
    base.update(kw)
    return Scenario(**base)  # type: ignore[arg-type]


def test_output_shapes_and_keys() -> None:
    p = predict(Scenario(num_requests=200, workload="fixed:100,1000"))
    assert list(p.timeline.columns) == TIMELINE_COLUMNS
    assert list(p.requests.columns) == REQUEST_COLUMNS
    assert set(p.summary) >= set(SUMMARY_KEYS)
    assert p.timeline.height <= 2000
    assert p.summary["cliff_onset_s"] is None and p.summary["preemptions"] == 0
    assert p.summary["bound_regime"] == "bandwidth-bound"
    assert 0 <= p.timeline["kv_usage"].max() <= 1


def test_small_pool_preempts_and_conserves_tokens(tiny_model: str) -> None:
    big = predict(small(1 << 30, tiny_model))
    tiny = predict(small(16 << 20, tiny_model))  # 2,048 bytes/token: 8,192 tokens for 64 × 576
    assert big.summary["preemptions"] == 0
    assert tiny.summary["preemptions"] > 0 and tiny.summary["cliff_onset_s"] is not None
    assert tiny.summary["completion_s"] > big.summary["completion_s"]
    for p in (big, tiny):
        assert p.summary["generated_tokens"] == 64 * 512
        assert p.requests["finished_s"].is_not_nan().all()
        r = p.requests
        assert ((r["first_token_s"] >= r["first_scheduled_s"]) & (r["finished_s"] >= r["first_token_s"])).all()


def test_pool_counts_like_vllm_usable_blocks(tiny_model: str) -> None:
    s = small(16 << 20, tiny_model)
    plan = memory_plan_for(s)
    assert plan.kv_blocks == (16 << 20) // (32 * 2 * 2 * 64 * 2) // 4 == 256
    assert plan.kv_capacity_tokens == 8192
    assert plan.usable_kv_blocks == plan.kv_blocks - 1


@settings(max_examples=12, deadline=None)
@given(mib=st.integers(9, 40), extra=st.integers(1, 40), osl=st.integers(50, 600), seed=st.integers(0, 5))
def test_more_kv_never_earlier_cliff_and_conservation(
    tiny_model: str, mib: int, extra: int, osl: int, seed: int
) -> None:
    kw = dict(workload=f"lognormal:60,0.3,{osl},0.3", seed=seed, num_requests=48)
    a = predict(small(mib << 20, tiny_model, **kw))
    b = predict(small((mib + extra) << 20, tiny_model, **kw))
    for p in (a, b):
        assert p.summary["generated_tokens"] == int(p.requests["osl"].sum())
    ca, cb = a.summary["cliff_onset_s"], b.summary["cliff_onset_s"]
    if ca is None:  # no cliff in the smaller pool: none in the larger one, not a single preemption
        assert cb is None and b.summary["preemptions"] == 0
    elif cb is not None:
        assert cb >= ca - 1e-9


def test_requests_override_and_dp_router() -> None:
    lengths = np.array([[10, 20]] * 10 + [[30, 40]] * 6)
    p = predict(Scenario(dp=2, gpus=2, num_requests=16), requests=lengths)
    assert p.summary["num_requests"] == 16 and p.summary["generated_tokens"] == 10 * 20 + 6 * 40


def test_arrival_rate_spreads_arrivals() -> None:
    p = predict(Scenario(num_requests=50, workload="fixed:100,200", arrival_rate=5.0))
    assert p.requests["arrival_s"].max() == pytest.approx(49 / 5.0)
    assert (p.requests["queue_s"] >= 0).all()


def test_infeasible_and_too_long_raise() -> None:
    with pytest.raises(SimulationError, match="infeasible"):
        predict(Scenario(model="405B"))
    with pytest.raises(SimulationError, match="max_model_len"):
        predict(Scenario(max_model_len=512, workload="fixed:100,1000", num_requests=2))


def test_paper_observation_more_seqs_more_preemption() -> None:
    """Observation 1: raising max_num_seqs past the KV capacity only adds preemption."""
    low = predict(Scenario(model="8B", num_requests=1500, max_num_seqs=128))
    high = predict(Scenario(model="8B", num_requests=1500, max_num_seqs=1024))
    assert low.summary["preemptions"] < high.summary["preemptions"]
    assert high.summary["peak_kv_usage"] > 0.99


def _same_run(s: Scenario, lengths: np.ndarray, caching: bool, loops: tuple[str, ...] = ("python", "compiled")) -> None:
    """The event-jumping fast path — its window loop in Python and compiled (numba) — and the general scheduler taken
    one step at a time give the same run. The compiled loop is compiled once per session (from numba's cache after
    `make test`'s warm-up; ~10-17 s on this machine without it)."""
    import engine.sim.config as sim

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sim, "USE_DECODE_WINDOWS", False)
        slow = predict(s, requests=lengths, prefix_caching=caching)
    for loop in loops:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sim, "WINDOW_LOOP", loop)
            fast = predict(s, requests=lengths, prefix_caching=caching)
        _assert_same(fast, slow, s.dp)


def _assert_same(fast: Prediction, slow: Prediction, dp: int) -> None:
    assert fast.summary["preemptions"] == slow.summary["preemptions"]
    assert fast.summary["generated_tokens"] == slow.summary["generated_tokens"]
    assert fast.summary["completion_s"] == pytest.approx(slow.summary["completion_s"], rel=1e-9)
    for col in ("first_scheduled_s", "first_token_s", "finished_s"):
        a, b = fast.requests[col].to_numpy(), slow.requests[col].to_numpy()
        assert np.isfinite(a).all(), col
        assert np.allclose(a, b, rtol=1e-9), col
    assert np.array_equal(fast.requests["num_preemptions"].to_numpy(), slow.requests["num_preemptions"].to_numpy())
    for part, value in slow.summary["time_fractions"].items():
        assert fast.summary["time_fractions"][part] == pytest.approx(value, rel=1e-9, abs=1e-12)
    if dp == 1:  # one replica's peak comes from its raw trace points (several replicas': from the time grid)
        assert fast.summary["peak_running"] == slow.summary["peak_running"]


@settings(max_examples=40, deadline=None)
@given(
    headroom=st.sampled_from([1.2, 2.0, 4.0, 8.0]),
    isl=st.sampled_from([60, 300]),
    osl=st.integers(100, 600),
    seed=st.integers(0, 3),
    caching=st.booleans(),
    seqs=st.integers(4, 64),
    budget=st.sampled_from([48, 100, 256, 2048]),
    rate=st.sampled_from([None, 50.0]),
    layout=st.sampled_from([(1, 1), (2, 1), (1, 2), (2, 2)]),
    loop=st.sampled_from(["python", "compiled"]),
)
def test_decode_windows_match_step_by_step(
    tiny_model: str,
    headroom: float,
    isl: int,
    osl: int,
    seed: int,
    caching: bool,
    seqs: int,
    budget: int,
    rate: float | None,
    layout: tuple[int, int],
    loop: str,
) -> None:
    """Small budgets make re-prefills span several steps inside a window (the prefilling tail), pools of a few
    times the longest request make preemption heavy; DP replicas, PP rounds and arrivals take their own paths
    through the fast scheduler. Each example checks one window loop (Python or compiled), to keep the test's cost."""
    dp, pp = layout
    workload = f"lognormal:{isl},0.5,{osl},0.5"
    lengths = np.asarray(request_lengths(workload, 40, seed))
    longest = int(lengths.sum(axis=1).max())
    bytes_per_token = 2048 // pp  # TINY: 4 layers × 2 KV heads × 64 × (K, V) × 2 bytes, split over PP stages
    s = small(
        int(longest * headroom + 64) * bytes_per_token,
        tiny_model,
        workload=workload,
        seed=seed,
        num_requests=40,
        max_num_seqs=seqs,
        max_num_batched_tokens=budget,
        max_model_len=longest + 32,
        arrival_rate=rate,
        dp=dp,
        pp=pp,
        gpus=dp * pp,
    )
    _same_run(s, lengths, caching, (loop,))


@pytest.mark.parametrize("caching", [True, False])
def test_last_prompt_token_alone_is_a_decode_step(tiny_model: str, caching: bool) -> None:
    """A prefill that leaves exactly one prompt token for the next step: that step is priced and counted as a
    decode (the reference cannot tell the two apart), and the first token comes at its end — both when the request
    starts a decode window and when it is the window's prefilling tail."""
    s = small(64 << 20, tiny_model, max_num_batched_tokens=64, num_requests=3)
    # Step 1: r0 prefills 30, r1 34 of 98. Step 2 (a window, r1 its prefilling tail): r0 decodes, r1 takes 63,
    # leaving 1. Step 3: r1's last prompt token. r2 (65 tokens) leaves 1 at the end of its own first chunk.
    _same_run(s, np.array([[30, 50], [98, 40], [65, 20]]), caching)
    _same_run(s, np.array([[65, 20]]), caching)


def test_preemption_heavy_long_run_matches_step_by_step(tiny_model: str) -> None:
    """Hundreds of preemptions with prefix-cache hits and re-prefills longer than the step's leftover budget."""
    s = small(
        10 << 20,
        tiny_model,
        workload="lognormal:200,0.5,700,0.6",
        num_requests=120,
        max_num_seqs=120,
        max_num_batched_tokens=160,
        seed=7,
    )
    lengths = np.asarray(request_lengths(s.workload, s.num_requests, s.seed))
    for caching in (True, False):
        _same_run(s, lengths, caching)
    assert predict(s, requests=lengths).summary["preemptions"] > 100


def test_compiled_window_loop_gives_the_python_loops_run_exactly() -> None:
    """On the over-subscribed 10,000-request case (~60k preemptions in one window) the compiled loop and the Python
    loop produce the same timeline, request records and summary, bit for bit."""
    import engine.sim.config as sim

    s = Scenario(model="8B", num_requests=10_000, max_num_seqs=10_000)
    runs = []
    for loop in ("python", "compiled"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sim, "WINDOW_LOOP", loop)
            runs.append(predict(s, requests=request_lengths(s.workload, s.num_requests, s.seed)))
    py, jit = runs
    assert py.summary["preemptions"] > 50_000
    assert jit.summary == py.summary
    assert jit.timeline.equals(py.timeline)
    assert jit.requests.equals(py.requests)


def test_python_loop_until_the_background_load_then_the_compiled_one() -> None:
    """A fresh process predicts without importing numba (the dashboard's first page); the background load (a child
    process compiles into numba's cache, the thread loads it) makes later predictions use the compiled loop."""
    code = """
import sys
from engine import window_jit
from engine.scenario import Scenario
from engine.simulate import _predict_cached, predict
s = Scenario(num_requests=300, max_num_seqs=300)
before = predict(s)
assert "numba" not in sys.modules and window_jit.kernel() is None
window_jit.start_background_load()
window_jit._thread.join(timeout=300)
assert window_jit.kernel() is not None, window_jit.load_error
_predict_cached.cache_clear()
after = predict(s)
assert after.summary == before.summary and after.requests.equals(before.requests)
"""
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=600)


class _BlockQueue:
    """The free queue block by block, as vLLM's BlockPool holds it (each free block tagged with the request whose
    hashed prefix it holds, −1 for none): the plain model FreePool's counts are held to."""

    def __init__(self, blocks: int) -> None:
        self.queue = [-1] * blocks

    def allocate(self, k: int) -> None:
        del self.queue[:k]

    def free(self, owner: int, blocks: int, full: int) -> None:
        self.queue[:0] = [-1] * (blocks - full)  # the partial last block to the front
        self.queue += [owner] * full

    def cached(self, owner: int) -> int:
        return self.queue.count(owner) if owner >= 0 else 0

    def reclaim(self, owner: int, blocks: int) -> None:
        held = [i for i, o in enumerate(self.queue) if o == owner]
        for i in reversed(held[:blocks]):
            del self.queue[i]
        self.queue = [-1 if o == owner else o for o in self.queue]


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from("afcr"), st.integers(-1, 5), st.integers(0, 6), st.integers(0, 6))))
def test_free_pool_counts_match_the_block_queue(ops: list[tuple[str, int, int, int]]) -> None:
    """FreePool keeps the queue as counts, evicts lazily and keeps unhashed front blocks as one number: after any
    sequence of allocations, frees (owned or anonymous, with partial blocks), hit lookups and reclaims it reports
    the same free blocks and hits as the queue kept block by block. (An owner frees at most once while its blocks
    are queued, as a preempted request does before it is re-admitted.)"""
    from engine.sim.free_pool import FreePool

    pool, plain = FreePool(4, True), _BlockQueue(4)
    queued: set[int] = set()
    for op, owner, a, b in ops:
        if op == "a" and a <= pool.num_free_blocks:
            pool.allocate(a)
            plain.allocate(a)
        elif op == "f" and owner not in queued:
            full = min(a, b)
            pool.free(owner, b, full)
            plain.free(owner, b, full)
            if owner >= 0:
                queued.add(owner)
        elif op == "c":
            assert pool.cached(owner) == plain.cached(owner)
        elif op == "r" and owner in queued:
            hit = min(a, plain.cached(owner))
            pool.reclaim(owner, hit)
            plain.reclaim(owner, hit)
            queued.discard(owner)
        assert pool.num_free_blocks == len(plain.queue)
    for owner in range(6):
        assert pool.cached(owner) == plain.cached(owner)
    assert pool.num_free_blocks == len(plain.queue)
