"""The compiled decode window's rules (engine.window_kernel), each driven on its own on a case worked out by hand.

The case: block size 4, three free blocks, two requests decoding with 4 prompt tokens computed and 1 token sampled
(1 block each), 100 output tokens. A decoder with c computed tokens needs a new block in the step that computes
token c + 1 when c mod 4 = 0: both need one in step 1 (3 → 1 free), none in steps 2-4, both again in step 5, when
only 1 is free. So vLLM's ``allocate_slots`` fails in step 5 and the tail of running (request 1) is preempted: its 2
blocks (8 computed tokens, both full) go to the back of the free queue under its id (3 free), request 0 takes 1 of
them (2 free), and request 1 waits at the head with 4 prompt + 5 generated tokens, needing 3 blocks to come back.
"""

import numpy as np

from engine import window_kernel as wk

I64 = np.int64
BS = 4


def _state(free: int = 3) -> tuple[np.ndarray, ...]:
    """The case's window at its start: scalars, positions, queues, crossings, free queue (one anonymous segment of
    ``free`` blocks) and the per-request prefix-cache segments."""
    isl, osl = np.array([4, 4], I64), np.array([100, 100], I64)
    w, req, queues, crossings = wk._initial_state(
        free, True, 0, 1, np.array([0, 1], I64), np.array([4, 4], I64), np.array([1, 1], I64), np.empty(0, I64),
        isl, osl, BS, 64, 8, False, 1000,
    )  # fmt: skip
    cached_segment = np.full(2, -1, I64)
    free_queue = wk._recentred_free_queue(np.array([-1], I64), np.array([free], I64), 0, 1, w, cached_segment)
    return w, req, queues, crossings, free_queue, cached_segment


def _queue(free_queue: np.ndarray, w: np.ndarray) -> list[tuple[int, int]]:
    head, tail = w[wk.FQ_HEAD], w[wk.FQ_TAIL]
    return list(zip(free_queue[wk.OWNER, head:tail].tolist(), free_queue[wk.BLOCKS, head:tail].tolist(), strict=True))


def test_both_decoders_cross_a_block_boundary_in_steps_1_and_5() -> None:
    w, _, _, crossings, _, _ = _state()
    assert w[wk.NUM_DECODING] == 2 and w[wk.TAIL_POS] == -1  # one token left to compute each: decoding
    assert crossings.tolist() == [0, 2, 0, 0]  # phase (1 − 4) mod 4 = 1: steps 1, 5, 9 …
    assert w[wk.SUM_COMPUTED_OFFSET] == 8


def test_the_window_jumps_to_step_5_where_the_pool_runs_out_and_preempts_the_tail() -> None:
    w, req, queues, crossings, free_queue, cached_segment = _state()
    runs, events = np.zeros(30, I64), np.zeros(30, I64)
    gen_g = np.zeros(2, I64)
    step, decode_blocks = wk._advance_to_next_event(w, req, queues, crossings, runs, events)
    assert (step, decode_blocks) == (5, 2)  # steps 1-4 fit (2 blocks), step 5 needs 2 with 1 free
    assert (w[wk.STEP], w[wk.FREE], w[wk.PENDING]) == (4, 1, 2)
    assert runs[:3].tolist() == [2, 8, 4]  # 2 decoding, Σ computed offset 8, for 4 steps
    assert events[:5].tolist() == [4, 2, 0, 0, 1]  # step 4: 2 running, 0 waiting, 0 preemptions, 1 free

    wk._preempt_tail_until_fits(free_queue, w, cached_segment, req, queues, crossings, runs, gen_g, 5, decode_blocks)
    assert req[wk.FATE, :2].tolist() == [wk.RUNNING, wk.PREEMPTED] and req[wk.FATE_STEP, 1] == 5
    assert gen_g.tolist() == [0, 5]  # request 1 had generated 1 + 4 tokens
    assert w[wk.NUM_PREEMPTIONS] == 1 and w[wk.NUM_DECODING] == 1 and w[wk.SUM_COMPUTED_OFFSET] == 4
    assert queues[wk.PREEMPTED_WAITING, : w[wk.NUM_PREEMPTED_WAITING]].tolist() == [1]
    assert w[wk.HEAD_TOKENS] == 9  # blocks for all 9 must be free to come back
    assert w[wk.FREE] == 2  # 1 + its 2 blocks − request 0's new one
    assert runs[3:6].tolist() == [1, 4, 1]
    # Its 2 full blocks joined the back of the queue under its id (hittable until evicted); nothing was evicted
    # yet (3 allocations pending).
    assert _queue(free_queue, w) == [(-1, 3), (1, 2)] and w[wk.PENDING] == 3
    assert cached_segment[1] == w[wk.FQ_TAIL] - 1


def test_window_loop_returns_the_same_records_as_the_rules_one_by_one() -> None:
    gen_g, seg_of = np.zeros(2, I64), np.full(2, -1, I64)
    out = wk.window_loop(
        3, True, np.array([-1], I64), np.array([3], I64), 0, 1, seg_of, np.array([0, 1], I64), np.array([4, 4], I64),
        np.array([1, 1], I64), np.empty(0, I64), np.array([4, 4], I64), np.array([100, 100], I64), gen_g, BS, 64, 8,
        False, 5,
    )  # fmt: skip
    (step, free, pending, owners, blocks, rid, computed_offset, generated_offset, fate, fate_step, *_rest) = out
    front, _taken, events, runs = out[13], out[14], out[15], out[16]
    assert (step, free, pending) == (5, 2, 3)
    assert list(zip(owners.tolist(), blocks.tolist(), strict=True)) == [(-1, 3), (1, 2)]
    assert rid.tolist() == [0, 1] and fate.tolist() == [0, 1] and fate_step.tolist() == [0, 5]
    assert computed_offset.tolist() == [4, 4] and generated_offset.tolist() == [1, 1]
    assert front.tolist() == [1] and gen_g.tolist() == [0, 5]
    assert runs.tolist() == [2, 8, 4, 1, 4, 1]
    assert events.tolist() == [4, 2, 0, 0, 1, 5, 1, 1, 1, 2]


def test_free_blocks_partial_to_the_front_full_to_the_back_finished_ones_merged() -> None:
    """The one place blocks are released: a preempted request with 25 computed tokens holds 7 blocks, 6 full."""
    w, _, _, _, free_queue, cached_segment = _state(free=10)
    cached_segment = np.full(4, -1, I64)
    wk._free_blocks(free_queue, w, cached_segment, 3, 7, 6)
    assert w[wk.FREE] == 17
    assert _queue(free_queue, w) == [(-1, 11), (3, 6)]  # its partial block merged into the anonymous front
    wk._free_blocks(free_queue, w, cached_segment, -1, 5, 5)  # finished: anonymous, after request 3's segment
    wk._free_blocks(free_queue, w, cached_segment, -1, 2, 2)  # merged into that anonymous last segment
    assert _queue(free_queue, w) == [(-1, 11), (3, 6), (-1, 7)]
    # 12 allocated: the front's 11 and one of request 3's are evicted; 5 of its blocks remain hittable.
    wk._allocate(w, 12)
    assert w[wk.FREE] == 12
    assert wk._prefix_cache_hit(free_queue, w, cached_segment, 3) == (w[wk.FQ_HEAD], 5)
    assert _queue(free_queue, w) == [(3, 5), (-1, 7)] and w[wk.PENDING] == 0
    # A partial block freed now goes before request 3's segment (the front is not anonymous any more).
    wk._free_blocks(free_queue, w, cached_segment, 0, 1, 0)
    assert _queue(free_queue, w) == [(-1, 1), (3, 5), (-1, 7)]
    assert free_queue[wk.OWNER, cached_segment[3]] == 3
    # The hit's blocks leave the queue; the segment's rest stays free, anonymous.
    wk._take_cached_blocks(free_queue, w, cached_segment, 3, cached_segment[3], 4)
    assert _queue(free_queue, w) == [(-1, 1), (-1, 1), (-1, 7)] and cached_segment[3] == -1


def test_the_kernel_compiles_the_rules_the_python_loop_calls() -> None:
    """engine.sim.rules is the one source of the window's arithmetic: compiled, each rule gives what the Python loop
    gets from the same function object, over cases around block boundaries, exhausted budgets and cached hits."""
    import random

    from numba import njit

    from engine.sim import rules

    assert wk.rules is rules
    rng = random.Random(12)
    compiled = {name: njit(getattr(rules, name)) for name in ("admission", "prefill_chunk", "held_blocks")}
    crossing = np.array([0, 2, 1, 0], I64)
    run_end = njit(rules.decode_run_end)
    for _ in range(300):
        bs = rng.choice([1, 4, 16])
        n, cached, budget, free = rng.randint(1, 300), rng.randint(0, 20), rng.randint(0, 300), rng.randint(0, 40)
        assert compiled["admission"](n, cached, budget, bs, free) == rules.admission(n, cached, budget, bs, free)
        computed = rng.randint(0, n)
        assert compiled["prefill_chunk"](n, computed, budget, bs) == rules.prefill_chunk(n, computed, budget, bs)
        assert compiled["held_blocks"](computed, bs) == rules.held_blocks(computed, bs)
        step, horizon = rng.randint(0, 50), rng.randint(0, 200)
        assert run_end(crossing, step, horizon, free, 3, 4) == rules.decode_run_end(
            crossing.tolist(), step, horizon, free, 3, 4
        )
