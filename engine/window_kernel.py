"""The decode window's event loop (``engine.sim.window._DecodeWindow``) compiled with numba, one rule per function.

The same rules, step for step, in vLLM's words (``engine.sim.reference`` writes them out plainly): a step serves the
``running`` requests under one token budget, each decode needing a new block when its computed tokens cross a block
boundary; when the free blocks cannot cover a step's allocations, ``allocate_slots`` fails and the tail of
``running`` (the most recently admitted request) is preempted (``_preempt``): its blocks go back to the free queue
(``_free_blocks``, the one place that does), it goes to the FRONT of ``waiting``. In a step without preemption,
``waiting`` is admitted (``_schedule_waiting``) while the budget, ``max_num_seqs`` and the free blocks allow; a
request whose last token came in a step finishes and frees its blocks after it (``_finish_requests``). Runs of steps
in which every running request decodes are jumped at once to the next event (``_advance_to_next_event``).

The rules are not written here: the functions of ``engine.sim.rules`` (blocks held, crossing phases, how far
decodes run, admission with its full-sequence gate, how many the waiting pass may admit, the prefilling tail's
chunk, prefill attention pairs, the preemption walk, given ``_preempt_tail``)
are the ones the Python loop calls, registered with ``register_jitable`` and compiled into this loop; this module
keeps the event loop and its arrays (``engine.sim.window``'s docstring says what is written twice and why). numba
caches this module's machine code keyed to this file only, so ``_forget_stale_rules`` drops it when the rules'
file changes.

State lives in a few arrays, so the hot loop never reassigns one (numba keeps a reference count on every array
variable it reassigns inside a loop; with ~15 growable arrays that bookkeeping took more than half of this loop's
time — measured with ``perf`` on the 10,000-request bench, 57 % of the samples in NRT_incref/decref):

- ``w``: the window's scalars (free blocks, step, queue heads, counters, the prefilling tail, the limits), indexed
  by the module's constants (``w[FREE]``, ``w[NUM_DECODING]`` …);
- ``req``: one column per position in ``running`` (positions ≥ the running count given are requests admitted in the
  window): request id, computed/generated token offsets, fate and its step, admission step;
- ``queues``: the positions' stacks and lists (the order tail preemption pops, the completion heap, preempted
  requests waiting, partial admissions, completed prefills of the prefilling tail);
- ``free_queue``: vLLM's free-block queue as (owner, blocks) segments read from ``w[FQ_HEAD]``, appended at
  ``w[FQ_TAIL]``; ``cached_segment[request]`` is a preempted request's segment still in it (−1: none);
- ``crossings[phase]``: decoders whose computed tokens cross a block boundary in steps ≡ phase (mod block size);
- the records the caller prices (runs of steps, trace points, prefill work per step), as flat arrays.

``_run_window`` steps until a step might outgrow an array, returns, and ``window_loop`` grows them and resumes.
Generated tokens of requests preempted in the window are written straight to ``gen_g`` (the Python loop keeps them
aside and writes them at the end; nothing reads them in between but the admissions, which read the same value
either way). Importing this module imports numba (~0.7 s); ``engine.window_jit`` decides when that happens.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from numba import njit
from numba.core.registry import CPUDispatcher
from numba.extending import register_jitable

from engine.sim import rules

# The rules both loops apply (engine.sim.rules), compiled from the very functions the Python loop calls.
for _rule in (
    rules.cdiv,
    rules.full_sequence_fits,
    rules.admission,
    rules.prefill_chunk,
    rules.prefill_pairs,
    rules.prefill_work,
    rules.still_prefilling,
    rules.held_blocks,
    rules.crossing_phase,
    rules.decode_run_end,
    rules.waiting_pass_slots,
    rules.preempt_from_tail,
):
    register_jitable(inline="always")(_rule)  # inlined in numba IR: no call, no array refcounts per event

_I64 = np.int64

# ---- w: the window's scalars.
FREE = 0  # free blocks
# PENDING: blocks allocated but not yet evicted from the free queue's front (FreePool.pending_evictions)
PENDING = 1
FQ_HEAD = 2
FQ_TAIL = 3
STEP = 4  # the last step taken (window steps count from 1)
NUM_POSITIONS = 5
NUM_DECODING = 6  # running requests that decode (all of running but the prefilling tail)
SUM_COMPUTED_OFFSET = 7  # Σ (computed tokens − step) over the decoding: step j reads this + (j − 1)·NUM_DECODING
NUM_UNPASSED = 8  # positions tail preemption has not passed yet (queues[TAIL_ORDER])
HEAP_SIZE = 9
NUM_PREEMPTED_WAITING = 10  # requests preempted in the window, still waiting (queues[PREEMPTED_WAITING], head last)
WAITING_TAKEN = 11  # requests taken from the ``waiting`` array given
NUM_PREEMPTIONS = 12
HEAD_TOKENS = 13  # tokens of the head of waiting, blocks for all of which must be free (−1: not known yet)
STOP_AFTER_EVENT = 14  # with arrivals pending, the window ends after its first event
TAIL_POS = 15  # the prefilling tail of running (−1: none), its request, computed tokens, tokens to reach, generated
TAIL_REQ = 16
TAIL_COMPUTED = 17
TAIL_NUM_TOKENS = 18
TAIL_GENERATED = 19
NUM_PARTIAL = 20
NUM_PREFILLED = 21
NUM_RUN_RECORDS = 22  # ints used in runs / events / prefill
NUM_EVENT_RECORDS = 23
NUM_PREFILL_RECORDS = 24
BLOCK_SIZE = 25  # the limits (read only)
BUDGET = 26  # max_num_batched_tokens (× pp: one budget per pipeline round)
MAX_NUM_SEQS = 27
CACHING = 28
ARRIVALS_PENDING = 29
MAX_STEPS = 30
NUM_WAITING_GIVEN = 31
NUM_RUNNING_GIVEN = 32
TAIL_CHUNK_BLOCKS = 33  # the prefilling tail's chunk blocks in a step whose blocks do not fit (its share of the need)
NUM_SCALARS = 34

# ---- req: one column per position.
REQ_ID = 0
COMPUTED_OFFSET = 1  # computed tokens − step (a kept position has computed COMPUTED_OFFSET + steps at the end)
GENERATED_OFFSET = 2
FATE = 3  # RUNNING, PREEMPTED or FINISHED (engine.sim.state.Fate)
FATE_STEP = 4
ADMITTED_STEP = 5
REQ_ROWS = 6
RUNNING, PREEMPTED, FINISHED = 0, 1, 2

# ---- queues: positions (and requests) in stacks and lists, each at most one entry per position.
TAIL_ORDER = 0  # positions in running order; tail preemption pops the last (a dead one is skipped)
COMPLETION_HEAP = 1  # (step of the last token << 32 | position), a min-heap; dead positions are skipped lazily
PREEMPTED_WAITING = 2  # requests, the head of waiting last
PARTIAL = 3  # positions admitted with a partial chunk
PREFILLED_REQ = 4  # request and step of each completed prefill of the prefilling tail
PREFILLED_STEP = 5
QUEUE_ROWS = 6

# ---- free_queue rows; records' widths.
OWNER = 0  # −1: blocks nobody can hit
BLOCKS = 1
RUN_WIDTH = 3  # decoding requests, Σ computed offset, steps
EVENT_WIDTH = 5  # step, running, waiting, preemptions so far, free blocks
PREFILL_WIDTH = 7  # step, tokens, pairs, cached tokens read, sequences, tokens sampled, prompt tokens

CONTINUE, STOP, NEED_ROOM = 0, 1, 2
_STEP_MASK = 0xFFFFFFFF


# ---- the free-block queue (vLLM's FreeKVCacheBlockQueue, as segments; see engine.sim.free_pool.FreePool).


@njit(cache=True)
def _allocate(w: np.ndarray, blocks: int) -> None:
    """``allocate_slots``' accounting: the blocks stop being free now, and leave the queue's front lazily (PENDING:
    the queue only loses blocks at its front, so evicting a sum at once leaves it as evicting each in turn)."""
    w[FREE] -= blocks
    w[PENDING] += blocks


@njit(cache=True)
def _evict_pending(free_queue: np.ndarray, w: np.ndarray, cached_segment: np.ndarray) -> None:
    """Evict the pending allocations from the queue's front (least recently freed first): a preempted request whose
    segment empties loses its prefix-cache hit."""
    k = w[PENDING]
    w[PENDING] = 0
    head = w[FQ_HEAD]
    while k > 0:
        b = free_queue[BLOCKS, head]
        if b > k:
            free_queue[BLOCKS, head] = b - k
            break
        k -= b
        free_queue[BLOCKS, head] = 0
        owner = free_queue[OWNER, head]
        head += 1
        if owner >= 0:
            cached_segment[owner] = -1
    w[FQ_HEAD] = head


@njit(cache=True)
def _prepend_unhashed(free_queue: np.ndarray, w: np.ndarray, cached_segment: np.ndarray, blocks: int) -> None:
    """Blocks without a hash (partial last blocks) go to the queue's FRONT, to be reused first (vLLM's
    ``BlockPool.free_blocks``), after the pending evictions, which came first; merged into an anonymous front
    segment. ``_has_room`` keeps room before the head."""
    _evict_pending(free_queue, w, cached_segment)
    head = w[FQ_HEAD]
    if head < w[FQ_TAIL] and free_queue[OWNER, head] < 0:
        free_queue[BLOCKS, head] += blocks
        return
    head -= 1
    free_queue[OWNER, head] = -1
    free_queue[BLOCKS, head] = blocks
    w[FQ_HEAD] = head


@njit(cache=True)
def _append_hashed(free_queue: np.ndarray, w: np.ndarray, cached_segment: np.ndarray, owner: int, blocks: int) -> None:
    """Full (hashed) blocks join the queue's back: a preempted request's own segment, hittable until evicted, or
    (owner −1, finished requests) merged into an anonymous last segment."""
    tail = w[FQ_TAIL]
    if owner < 0 and tail > w[FQ_HEAD] and free_queue[OWNER, tail - 1] < 0:
        free_queue[BLOCKS, tail - 1] += blocks
        return
    free_queue[OWNER, tail] = owner
    free_queue[BLOCKS, tail] = blocks
    w[FQ_TAIL] = tail + 1
    if owner >= 0:
        cached_segment[owner] = tail


@njit(cache=True)
def _free_blocks(
    free_queue: np.ndarray, w: np.ndarray, cached_segment: np.ndarray, owner: int, blocks: int, full: int
) -> None:
    """Free ``blocks``, ``full`` of them hashed (computed tokens // block size), into the free queue: the hashed ones
    to the back (under ``owner`` ≥ 0, a preempted request, or anonymous), the rest (partial last blocks) to the
    front. The one place blocks are released (``engine.sim.free_pool.FreePool.free``)."""
    w[FREE] += blocks
    if w[CACHING]:
        if blocks > full:
            _prepend_unhashed(free_queue, w, cached_segment, blocks - full)
        if full > 0:
            _append_hashed(free_queue, w, cached_segment, owner, full)


@njit(cache=True)
def _prefix_cache_hit(
    free_queue: np.ndarray, w: np.ndarray, cached_segment: np.ndarray, request: int
) -> tuple[int, int]:
    """vLLM's ``get_computed_blocks`` here: a preempted request's own full blocks still in the free queue (after
    the allocations so far evicted theirs). Returns (segment or −1, its blocks; ``rules.admission`` caps the hit)."""
    segment = cached_segment[request]
    if segment < 0:
        return -1, 0
    if w[PENDING]:
        _evict_pending(free_queue, w, cached_segment)
        segment = cached_segment[request]
        if segment < 0:
            return -1, 0
    return segment, free_queue[BLOCKS, segment]


@njit(cache=True)
def _take_cached_blocks(
    free_queue: np.ndarray, w: np.ndarray, cached_segment: np.ndarray, request: int, segment: int, blocks: int
) -> None:
    """A prefix-cache hit's blocks leave the free queue; any uncovered rest of the segment stays free, anonymous."""
    cached_segment[request] = -1
    w[FREE] -= blocks
    free_queue[BLOCKS, segment] -= blocks
    free_queue[OWNER, segment] = -1


# ---- the completion heap.


@njit(cache=True)
def _heap_push(queues: np.ndarray, w: np.ndarray, key: int) -> None:
    i = w[HEAP_SIZE]
    w[HEAP_SIZE] = i + 1
    queues[COMPLETION_HEAP, i] = key
    while i > 0:
        parent = (i - 1) >> 1
        if queues[COMPLETION_HEAP, parent] <= key:
            break
        queues[COMPLETION_HEAP, i] = queues[COMPLETION_HEAP, parent]
        i = parent
    queues[COMPLETION_HEAP, i] = key


@njit(cache=True)
def _heap_sift_down(queues: np.ndarray, n: int, i: int, key: int) -> None:
    """Place ``key`` at ``i`` of the ``n``-entry heap, moving smaller children up."""
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and queues[COMPLETION_HEAP, child + 1] < queues[COMPLETION_HEAP, child]:
            child += 1
        if queues[COMPLETION_HEAP, child] >= key:
            break
        queues[COMPLETION_HEAP, i] = queues[COMPLETION_HEAP, child]
        i = child
    queues[COMPLETION_HEAP, i] = key


@njit(cache=True)
def _heap_pop(queues: np.ndarray, w: np.ndarray) -> None:
    n = w[HEAP_SIZE] - 1
    w[HEAP_SIZE] = n
    if n > 0:
        _heap_sift_down(queues, n, 0, queues[COMPLETION_HEAP, n])


@njit(cache=True)
def _drop_preempted_completions(req: np.ndarray, queues: np.ndarray, w: np.ndarray) -> None:
    """A preempted position's entry stays in the heap until it reaches the top (lazy deletion); in a cliff run they
    outnumber the live ones (10,000-request bench: a heap of ~1,900 for a median of 236 running). Dropping them all
    at once and re-heapifying (O(n)) keeps the heap to the running ones; the live entries pop in the same order
    (their keys are unique)."""
    n = 0
    for k in range(w[HEAP_SIZE]):
        key = queues[COMPLETION_HEAP, k]
        if req[FATE, key & _STEP_MASK] == RUNNING:
            queues[COMPLETION_HEAP, n] = key
            n += 1
    w[HEAP_SIZE] = n
    for i in range(n // 2 - 1, -1, -1):
        _heap_sift_down(queues, n, i, queues[COMPLETION_HEAP, i])


# ---- running requests: start and stop decoding, preempt, finish.


@njit(cache=True)
def _start_decoding(
    w: np.ndarray, queues: np.ndarray, crossings: np.ndarray, pos: int, num_tokens: int, generated: int,
    max_tokens: int, step: int,
) -> None:  # fmt: skip
    """A request whose prefill ended in ``step`` (its ``num_tokens`` computed, ``generated`` tokens sampled)
    decodes one token per step from the next, until its ``max_tokens``-th."""
    w[NUM_DECODING] += 1
    w[SUM_COMPUTED_OFFSET] += num_tokens - step
    crossings[rules.crossing_phase(num_tokens - step, w[BLOCK_SIZE])] += 1
    _heap_push(queues, w, ((step + max_tokens - generated) << 32) | pos)


@njit(cache=True)
def _stop_decoding(w: np.ndarray, crossings: np.ndarray, computed_offset: int) -> int:
    """A decoding request leaves the decode set (preempted or finished); returns its block-crossing phase."""
    phase = rules.crossing_phase(computed_offset, w[BLOCK_SIZE])
    crossings[phase] -= 1
    w[NUM_DECODING] -= 1
    w[SUM_COMPUTED_OFFSET] -= computed_offset
    return phase


@njit(cache=True)
def _set_fate(req: np.ndarray, pos: int, fate: int, step: int) -> None:
    req[FATE, pos] = fate
    req[FATE_STEP, pos] = step


@njit(cache=True)
def _preempt(
    free_queue: np.ndarray, w: np.ndarray, cached_segment: np.ndarray, req: np.ndarray, queues: np.ndarray,
    gen_g: np.ndarray, pos: int, num_computed: int, num_tokens: int, generated: int, step: int,
) -> None:  # fmt: skip
    """vLLM's ``_preempt_request`` (recompute): the request frees its blocks (its full ones stay hittable under its
    id), forgets its progress and goes to the FRONT of waiting; the head of waiting then needs blocks for all its
    tokens, the ``generated`` ones included."""
    request = req[REQ_ID, pos]
    bs = w[BLOCK_SIZE]
    blocks, full = rules.held_blocks(num_computed, bs)
    _free_blocks(free_queue, w, cached_segment, request, blocks, full)
    _set_fate(req, pos, PREEMPTED, step)
    gen_g[request] = generated
    queues[PREEMPTED_WAITING, w[NUM_PREEMPTED_WAITING]] = request
    w[NUM_PREEMPTED_WAITING] += 1
    w[HEAD_TOKENS] = num_tokens
    w[NUM_PREEMPTIONS] += 1


@njit(cache=True)
def _finish_requests(
    free_queue: np.ndarray, w: np.ndarray, cached_segment: np.ndarray, req: np.ndarray, queues: np.ndarray,
    crossings: np.ndarray, step: int, blocks: int, partial_blocks: int,
) -> None:  # fmt: skip
    """Requests whose last token came in ``step`` finish and free their blocks after it (anonymous: nobody can hit
    them), with ``blocks`` (``partial_blocks`` of them partial) of those that finished as their prefill ended."""
    bs = w[BLOCK_SIZE]
    while w[HEAP_SIZE] > 0 and (queues[COMPLETION_HEAP, 0] >> 32) <= step:
        pos = queues[COMPLETION_HEAP, 0] & _STEP_MASK
        _heap_pop(queues, w)
        if req[FATE, pos] != RUNNING:
            continue
        _set_fate(req, pos, FINISHED, step)
        computed_offset = req[COMPUTED_OFFSET, pos]
        _stop_decoding(w, crossings, computed_offset)
        held, full = rules.held_blocks(computed_offset + step, bs)
        blocks += held
        partial_blocks += held - full
    if blocks:
        _free_blocks(free_queue, w, cached_segment, -1, blocks, blocks - partial_blocks)


# ---- the waiting queue: requests preempted in the window first (most recent first), then the ones given.


@njit(cache=True)
def _num_waiting(w: np.ndarray) -> int:
    return w[NUM_PREEMPTED_WAITING] + w[NUM_WAITING_GIVEN] - w[WAITING_TAKEN]


@njit(cache=True)
def _waiting_head(w: np.ndarray, queues: np.ndarray, waiting: np.ndarray) -> int:
    n = w[NUM_PREEMPTED_WAITING]
    if n > 0:
        return queues[PREEMPTED_WAITING, n - 1]
    return waiting[w[WAITING_TAKEN]]


@njit(cache=True)
def _pop_waiting_head(w: np.ndarray) -> None:
    if w[NUM_PREEMPTED_WAITING] > 0:
        w[NUM_PREEMPTED_WAITING] -= 1
    else:
        w[WAITING_TAKEN] += 1
    w[HEAD_TOKENS] = -1


@njit(cache=True)
def _head_fits(
    w: np.ndarray, queues: np.ndarray, waiting: np.ndarray, isl: np.ndarray, gen_g: np.ndarray, decode_blocks: int
) -> bool:
    """Whether a decode-only step can admit the head of waiting: its decodes fit without preemption, a sequence
    slot and budget are left, and blocks for ALL the head's tokens are free besides (``full_sequence_fits``,
    vLLM's ``scheduler_reserve_full_isl``). When they are not, nothing can be admitted before the next event
    (free blocks only shrink), so the window may jump."""
    decoding = w[NUM_DECODING]
    if decode_blocks > w[FREE] or _num_waiting(w) == 0:
        return False
    if rules.waiting_pass_slots(0, w[BUDGET] - decoding, decoding, w[MAX_NUM_SEQS]) == 0:
        return False
    if w[HEAD_TOKENS] < 0:
        request = _waiting_head(w, queues, waiting)
        w[HEAD_TOKENS] = isl[request] + gen_g[request]
    return rules.full_sequence_fits(w[HEAD_TOKENS], w[BLOCK_SIZE], w[FREE] - decode_blocks)


# ---- records: runs of decode steps, trace points, prefill work per step.


@njit(cache=True)
def _record_run(runs: np.ndarray, w: np.ndarray, num_steps: int) -> None:
    n = w[NUM_RUN_RECORDS]
    runs[n] = w[NUM_DECODING]
    runs[n + 1] = w[SUM_COMPUTED_OFFSET]
    runs[n + 2] = num_steps
    w[NUM_RUN_RECORDS] = n + RUN_WIDTH


@njit(cache=True)
def _record_event(events: np.ndarray, w: np.ndarray, step: int, running: int) -> None:
    n = w[NUM_EVENT_RECORDS]
    events[n] = step
    events[n + 1] = running
    events[n + 2] = _num_waiting(w)
    events[n + 3] = w[NUM_PREEMPTIONS]
    events[n + 4] = w[FREE]
    w[NUM_EVENT_RECORDS] = n + EVENT_WIDTH


@njit(cache=True)
def _open_prefill_record(prefill: np.ndarray, w: np.ndarray, step: int) -> None:
    """Start step ``step``'s prefill record at the end of ``prefill`` (kept by ``_window_step`` when it runs one)."""
    n = w[NUM_PREFILL_RECORDS]
    prefill[n] = step
    for k in range(1, PREFILL_WIDTH):
        prefill[n + k] = 0.0


@njit(cache=True)
def _add_prefill_work(
    prefill: np.ndarray, w: np.ndarray, tokens: int, pairs: float, cached_tokens: int, prompt_tokens: int
) -> None:
    """One sequence's prefill work in the open record: tokens computed, (query, key) pairs, cached tokens read."""
    n = w[NUM_PREFILL_RECORDS]
    prefill[n + 1] += tokens
    prefill[n + 2] += pairs
    prefill[n + 3] += cached_tokens
    prefill[n + 4] += 1
    prefill[n + 6] += prompt_tokens


# ---- one step's rules.


@njit(cache=True)
def _end_prefill(
    w: np.ndarray, req: np.ndarray, queues: np.ndarray, crossings: np.ndarray, prefill: np.ndarray,
    osl: np.ndarray, pos: int, num_tokens: int, generated: int, step: int,
) -> tuple[int, int]:  # fmt: skip
    """A prefill's last position samples a token in ``step``: the request finishes if that was its last (its blocks
    return after the step: returns them and how many are partial), else it decodes from the next step."""
    prefill[w[NUM_PREFILL_RECORDS] + 5] += 1
    generated += 1
    request = req[REQ_ID, pos]
    req[COMPUTED_OFFSET, pos] = num_tokens - step
    req[GENERATED_OFFSET, pos] = generated - step
    if generated >= osl[request]:
        _set_fate(req, pos, FINISHED, step)
        blocks, full = rules.held_blocks(num_tokens, w[BLOCK_SIZE])
        return blocks, blocks - full
    _start_decoding(w, queues, crossings, pos, num_tokens, generated, osl[request], step)
    return 0, 0


@njit(cache=True)
def _schedule_prefilling_tail(
    w: np.ndarray, req: np.ndarray, queues: np.ndarray, crossings: np.ndarray, runs: np.ndarray, prefill: np.ndarray,
    osl: np.ndarray, step: int,
) -> tuple[int, int, int, int]:  # fmt: skip
    """A step with a prefilling tail: the decodes take one token each, the tail's chunk whatever budget they leave.
    When their blocks do not fit, ``allocate_slots`` fails: the caller preempts from the tail, this request first
    (``_preempt_tail_until_fits``). Returns (budget left for admissions, blocks of requests finished by their
    prefill, of which partial, the step's blocks to fit by preemption or −1 when the step runs)."""
    bs = w[BLOCK_SIZE]
    decoding = w[NUM_DECODING]
    decode_blocks = crossings[step % bs]
    computed = w[TAIL_COMPUTED]
    num_tokens = w[TAIL_NUM_TOKENS]
    chunk, chunk_blocks = rules.prefill_chunk(num_tokens, computed, w[BUDGET] - decoding, bs)
    pos = w[TAIL_POS]
    if decode_blocks + chunk_blocks > w[FREE]:  # the walk preempts the tail first (it is the last of running)
        w[TAIL_CHUNK_BLOCKS] = chunk_blocks
        return 0, 0, 0, decode_blocks + chunk_blocks
    _record_run(runs, w, 1)
    _allocate(w, decode_blocks + chunk_blocks)
    _open_prefill_record(prefill, w, step)
    tokens, pairs, prompt = rules.prefill_work(chunk, computed, num_tokens)  # a lone last token: a decode's
    _add_prefill_work(prefill, w, tokens, pairs, computed, prompt)
    computed += chunk
    w[TAIL_COMPUTED] = computed
    left = w[BUDGET] - decoding - chunk
    if computed < num_tokens:
        return left, 0, 0, -1
    n = w[NUM_PREFILLED]
    queues[PREFILLED_REQ, n] = w[TAIL_REQ]
    queues[PREFILLED_STEP, n] = step
    w[NUM_PREFILLED] = n + 1
    w[TAIL_POS] = -1
    blocks, partial = _end_prefill(w, req, queues, crossings, prefill, osl, pos, num_tokens, w[TAIL_GENERATED], step)
    return left, blocks, partial, -1


@njit(cache=True)
def _advance_to_next_event(
    w: np.ndarray, req: np.ndarray, queues: np.ndarray, crossings: np.ndarray, runs: np.ndarray, events: np.ndarray
) -> tuple[int, int]:
    """Jump over the steps in which every running request decodes and all their blocks fit, to the next event: a
    completion, or the first step whose allocations exceed the free blocks. Over any block-size consecutive steps
    each decoder crosses a block boundary once, so whole cycles that surely fit are skipped and at most two walked
    (``rules.decode_run_end``).
    Returns (the event's step, decode blocks to fit by preemption or −1 for a completion), or (−1, −1) when the
    window ends at max_steps first."""
    bs = w[BLOCK_SIZE]
    decoding = w[NUM_DECODING]
    free = w[FREE]
    step = w[STEP]
    if w[HEAP_SIZE] > 2 * decoding + 64:
        _drop_preempted_completions(req, queues, w)
    while req[FATE, queues[COMPLETION_HEAP, 0] & _STEP_MASK] != RUNNING:
        _heap_pop(queues, w)
    next_finish = queues[COMPLETION_HEAP, 0] >> 32
    horizon = min(next_finish, w[MAX_STEPS])
    last_fitting, blocks = rules.decode_run_end(crossings, step, horizon, free, decoding, bs)
    if last_fitting > step:
        _record_run(runs, w, last_fitting - step)
        _allocate(w, blocks)
        if last_fitting - step > 1:  # a trace point at the end of a long run, before the event that ends it
            _record_event(events, w, last_fitting, decoding)
        w[STEP] = last_fitting
    w[STOP_AFTER_EVENT] = w[ARRIVALS_PENDING]
    if last_fitting == horizon:
        if horizon < next_finish:
            return -1, -1
        return last_fitting, -1
    return last_fitting + 1, crossings[(last_fitting + 1) % bs]


@njit(cache=True)
def _preempt_tail(state: tuple) -> int:  # type: ignore[type-arg]
    """vLLM's ``_preempt_request`` for the tail of running (for ``rules.preempt_from_tail``); returns its blocks
    plus its share of the step's need (the prefilling tail's chunk blocks, or a decoder's new block if it crosses
    into one in this step), −1 when nobody is left. The tail is found by popping ``queues[TAIL_ORDER]`` (above the
    last one popped, every position is preempted or finished until admissions append more), not by walking down
    past every dead position again."""
    free_queue, w, cached_segment, req, queues, crossings, gen_g, step = state
    pos = -1
    while w[NUM_UNPASSED] > 0:
        w[NUM_UNPASSED] -= 1
        pos = queues[TAIL_ORDER, w[NUM_UNPASSED]]
        if req[FATE, pos] == RUNNING:
            break
        pos = -1
    if pos < 0:
        return -1
    if pos == w[TAIL_POS]:  # the prefilling tail: its progress is in the tail fields
        computed = w[TAIL_COMPUTED]
        _preempt(free_queue, w, cached_segment, req, queues, gen_g, pos, computed, w[TAIL_NUM_TOKENS],
                 w[TAIL_GENERATED], step)  # fmt: skip
        w[TAIL_POS] = -1
        share = w[TAIL_CHUNK_BLOCKS]
    else:
        computed_before = w[STEP]  # a decoder's computed tokens before this step: its offset + this
        offset = req[COMPUTED_OFFSET, pos]
        computed = offset + computed_before
        generated = req[GENERATED_OFFSET, pos] + computed_before
        _preempt(free_queue, w, cached_segment, req, queues, gen_g, pos, computed, computed + 1, generated, step)
        share = 1 if _stop_decoding(w, crossings, offset) == step % w[BLOCK_SIZE] else 0
    return rules.held_blocks(computed, w[BLOCK_SIZE])[0] + share


@njit(cache=True)
def _preempt_tail_until_fits(
    free_queue: np.ndarray, w: np.ndarray, cached_segment: np.ndarray, req: np.ndarray, queues: np.ndarray,
    crossings: np.ndarray, runs: np.ndarray, gen_g: np.ndarray, step: int, need: int,
) -> None:  # fmt: skip
    """``allocate_slots`` fails for the step's ``need`` (its decodes' blocks, and the prefilling tail's chunk when
    there is one): preempt from the tail of running until it fits (``rules.preempt_from_tail``); a preempted request
    no longer needs its blocks. Then the step runs."""
    if need > w[FREE]:
        state = (free_queue, w, cached_segment, req, queues, crossings, gen_g, step)
        if rules.preempt_from_tail(state, need - w[FREE], _preempt_tail):
            need = crossings[step % w[BLOCK_SIZE]]  # the decodes' blocks left
    _record_run(runs, w, 1)
    _allocate(w, need)


@njit(cache=True)
def _add_running(w: np.ndarray, req: np.ndarray, queues: np.ndarray, request: int, step: int) -> int:
    """A new position at the tail of running; returns it."""
    pos = w[NUM_POSITIONS]
    w[NUM_POSITIONS] = pos + 1
    queues[TAIL_ORDER, w[NUM_UNPASSED]] = pos
    w[NUM_UNPASSED] += 1
    req[REQ_ID, pos] = request
    _set_fate(req, pos, RUNNING, 0)
    req[ADMITTED_STEP, pos] = step
    return pos


@njit(cache=True)
def _become_prefilling_tail(
    w: np.ndarray, req: np.ndarray, queues: np.ndarray, pos: int, computed: int, num_tokens: int, generated: int
) -> None:
    """An admission whose prefill did not fit the budget left: it goes on prefilling at the tail, chunk by chunk."""
    w[TAIL_POS] = pos
    w[TAIL_REQ] = req[REQ_ID, pos]
    w[TAIL_COMPUTED] = computed
    w[TAIL_NUM_TOKENS] = num_tokens
    w[TAIL_GENERATED] = generated
    req[COMPUTED_OFFSET, pos] = 0
    req[GENERATED_OFFSET, pos] = 0
    queues[PARTIAL, w[NUM_PARTIAL]] = pos
    w[NUM_PARTIAL] += 1


@njit(cache=True)
def _schedule_waiting(
    free_queue: np.ndarray, w: np.ndarray, cached_segment: np.ndarray, req: np.ndarray, queues: np.ndarray,
    crossings: np.ndarray, prefill: np.ndarray, waiting: np.ndarray, isl: np.ndarray, osl: np.ndarray,
    gen_g: np.ndarray, step: int, left: int, slots: int,
) -> tuple[int, int]:  # fmt: skip
    """``schedule()``'s second pass: admit the head of waiting, at most ``slots`` (``rules.waiting_pass_slots``: none
    after a preemption, fewer than max_num_seqs running), while budget is ``left`` and blocks for all its tokens are
    free (``full_sequence_fits``), each with its prefix-cache hit; the first that does not fit stops it, as does a
    partial chunk (it becomes the prefilling tail). Returns the blocks of admissions finished by their prefill, and how
    many of them are partial."""
    bs = w[BLOCK_SIZE]
    blocks = 0
    partial = 0
    admitted = 0
    while _num_waiting(w) > 0 and admitted < slots:  # a spent budget stops it too (a chunk of 0: admission)
        request = _waiting_head(w, queues, waiting)
        generated = gen_g[request]
        num_tokens = isl[request] + generated
        segment, cached = _prefix_cache_hit(free_queue, w, cached_segment, request)
        hit, chunk, held = rules.admission(num_tokens, cached, left, bs, w[FREE])
        if chunk == 0:
            break
        cached_tokens = hit * bs
        _pop_waiting_head(w)
        if segment >= 0:
            _take_cached_blocks(free_queue, w, cached_segment, request, segment, hit)
        _allocate(w, held - hit)
        _add_prefill_work(prefill, w, chunk, rules.prefill_pairs(chunk, cached_tokens), cached_tokens, chunk)
        left -= chunk
        admitted += 1
        pos = _add_running(w, req, queues, request, step)
        if chunk < num_tokens - cached_tokens:
            _become_prefilling_tail(w, req, queues, pos, cached_tokens + chunk, num_tokens, generated)
            break
        finished_blocks, finished_partial = _end_prefill(
            w, req, queues, crossings, prefill, osl, pos, num_tokens, generated, step
        )
        blocks += finished_blocks
        partial += finished_partial
    return blocks, partial


@njit(cache=True)
def _close_step(
    free_queue: np.ndarray, w: np.ndarray, cached_segment: np.ndarray, req: np.ndarray, queues: np.ndarray,
    crossings: np.ndarray, events: np.ndarray, step: int, blocks: int, partial: int, had_tail: bool,
) -> int:  # fmt: skip
    """The end of ``step``: requests whose last token came in it finish and free their blocks (``blocks``, of which
    ``partial`` partial, of those finished by their prefill besides), and a trace point. STOP when nobody runs or
    waits any more, else CONTINUE."""
    _finish_requests(free_queue, w, cached_segment, req, queues, crossings, step, blocks, partial)
    w[STEP] = step
    running = w[NUM_DECODING] + (1 if w[TAIL_POS] >= 0 else 0)
    _record_event(events, w, step, running)
    if not had_tail and w[TAIL_POS] >= 0:
        _record_event(events, w, step, running)  # the reference closes its decode run here and records it again
    if running == 0 and _num_waiting(w) == 0:
        return STOP
    return CONTINUE


@njit(cache=True)
def _window_step(
    free_queue: np.ndarray, w: np.ndarray, cached_segment: np.ndarray, req: np.ndarray, queues: np.ndarray,
    crossings: np.ndarray, runs: np.ndarray, events: np.ndarray, prefill: np.ndarray, waiting: np.ndarray,
    isl: np.ndarray, osl: np.ndarray, gen_g: np.ndarray,
) -> int:  # fmt: skip
    """One event of the window: a step with the prefilling tail, a decode step that admits, or a jump to the next
    completion or preemption; then admissions (only in a step without preemption), completions and a trace point.
    Returns CONTINUE or STOP."""
    if w[STOP_AFTER_EVENT]:
        return STOP
    step = w[STEP] + 1
    had_tail = w[TAIL_POS] >= 0
    num_running = w[NUM_DECODING]
    left = 0  # budget left for admissions
    blocks = partial = 0  # of requests finished by their prefill this step
    preempt_for = -1  # ≥ 0: decode blocks to fit by preempting from the tail
    if had_tail:
        num_running += 1
        left, blocks, partial, preempt_for = _schedule_prefilling_tail(
            w, req, queues, crossings, runs, prefill, osl, step
        )
        record_open = preempt_for < 0
    else:
        record_open = False
        decode_blocks = crossings[step % w[BLOCK_SIZE]]
        if _head_fits(w, queues, waiting, isl, gen_g, decode_blocks):
            if w[ARRIVALS_PENDING]:
                return STOP  # a possible admission before the next arrival: the general scheduler takes the step
            _record_run(runs, w, 1)
            _allocate(w, decode_blocks)
            left = w[BUDGET] - num_running
        else:
            if num_running == 0:
                return STOP
            step, preempt_for = _advance_to_next_event(w, req, queues, crossings, runs, events)
            if step < 0:
                return STOP
    if preempt_for >= 0:
        _preempt_tail_until_fits(free_queue, w, cached_segment, req, queues, crossings, runs, gen_g, step, preempt_for)
    slots = rules.waiting_pass_slots(int(preempt_for >= 0), left, num_running, w[MAX_NUM_SEQS])
    if slots:
        if not record_open:
            _open_prefill_record(prefill, w, step)
            record_open = True
        more_blocks, more_partial = _schedule_waiting(
            free_queue, w, cached_segment, req, queues, crossings, prefill, waiting, isl, osl, gen_g, step, left,
            slots,
        )  # fmt: skip
        blocks += more_blocks
        partial += more_partial
    if record_open:
        w[NUM_PREFILL_RECORDS] += PREFILL_WIDTH
    return _close_step(free_queue, w, cached_segment, req, queues, crossings, events, step, blocks, partial, had_tail)


# ---- the window: steps until it ends, growing the arrays between steps.


@njit(cache=True)
def _has_room(
    w: np.ndarray, free_queue: np.ndarray, req: np.ndarray, runs: np.ndarray, events: np.ndarray, prefill: np.ndarray
) -> bool:
    """Whether every array has room for the most one step can add: admissions (≤ min(budget, max_num_seqs) new
    positions; every queue holds at most one entry per position), releases to either end of the free queue (one
    per preemption, ≤ the running requests, and one for the finished), two runs, three trace points, a record."""
    if w[NUM_POSITIONS] + min(w[BUDGET], w[MAX_NUM_SEQS]) + 1 > req.shape[1]:
        return False
    releases = w[NUM_DECODING] + 2
    if w[FQ_HEAD] < releases or w[FQ_TAIL] + releases > free_queue.shape[1]:
        return False
    return (
        w[NUM_RUN_RECORDS] + 2 * RUN_WIDTH <= runs.shape[0]
        and w[NUM_EVENT_RECORDS] + 3 * EVENT_WIDTH <= events.shape[0]
        and w[NUM_PREFILL_RECORDS] + PREFILL_WIDTH <= prefill.shape[0]
    )


@njit(cache=True)
def _run_window(
    free_queue: np.ndarray, w: np.ndarray, cached_segment: np.ndarray, req: np.ndarray, queues: np.ndarray,
    crossings: np.ndarray, runs: np.ndarray, events: np.ndarray, prefill: np.ndarray, waiting: np.ndarray,
    isl: np.ndarray, osl: np.ndarray, gen_g: np.ndarray,
) -> int:  # fmt: skip
    """Step until the window ends (STOP) or a step might outgrow an array (NEED_ROOM: grow, call again). No array
    is reassigned in here, which is what keeps numba's reference counting out of the loop."""
    while w[STEP] < w[MAX_STEPS]:
        if not _has_room(w, free_queue, req, runs, events, prefill):
            return NEED_ROOM
        status = _window_step(
            free_queue, w, cached_segment, req, queues, crossings, runs, events, prefill, waiting, isl, osl, gen_g
        )
        if status == STOP:
            return STOP
    return STOP


@njit(cache=True)
def _with_columns(a: np.ndarray, used: int, columns: int) -> np.ndarray:
    """``a`` (rows × columns) copied into a wider array: its first ``used`` columns, room for ``columns``."""
    b = np.empty((a.shape[0], columns), a.dtype)
    b[:, :used] = a[:, :used]
    return b


@njit(cache=True)
def _with_length(a: np.ndarray, used: int, length: int) -> np.ndarray:
    b = np.empty(length, a.dtype)
    b[:used] = a[:used]
    return b


@njit(cache=True)
def _recentred_free_queue(
    owners: np.ndarray, blocks: np.ndarray, head: int, tail: int, w: np.ndarray, cached_segment: np.ndarray
) -> np.ndarray:
    """The free queue's segments [head, tail) in a new (owner, blocks) array with room at both ends for as many
    segments again, a quarter of the old array's length (so a queue sliding one way is moved O(log) times) and
    twice the releases one step can make; ``w``'s head and tail and the owners' ``cached_segment`` follow."""
    n = tail - head
    room = max(n, owners.shape[0] // 4) + 2 * (w[NUM_DECODING] + 2) + 64
    queue = np.empty((2, 2 * (n + room)), _I64)
    start = n // 2 + room
    for k in range(n):
        owner = owners[head + k]
        queue[OWNER, start + k] = owner
        queue[BLOCKS, start + k] = blocks[head + k]
        if owner >= 0:
            cached_segment[owner] = start + k
    w[FQ_HEAD] = start
    w[FQ_TAIL] = start + n
    return queue


@njit(cache=True)
def _initial_state(
    free: int, caching: bool, f_head: int, f_tail: int, rid0: np.ndarray, comp0: np.ndarray, gen0: np.ndarray,
    waiting: np.ndarray, isl: np.ndarray, osl: np.ndarray, bs: int, budget: int, max_num_seqs: int,
    arrivals_pending: bool, max_steps: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The window's scalars, positions and queues, and block crossings for the running requests given (the last
    of them is the prefilling tail when it has more than one token left to compute)."""
    m = rid0.shape[0]
    w = np.zeros(NUM_SCALARS, _I64)
    w[FREE], w[FQ_HEAD], w[FQ_TAIL], w[NUM_POSITIONS], w[NUM_UNPASSED] = free, f_head, f_tail, m, m
    w[HEAD_TOKENS], w[TAIL_POS] = -1, -1
    w[BLOCK_SIZE], w[BUDGET], w[MAX_NUM_SEQS], w[CACHING] = bs, budget, max_num_seqs, caching
    w[ARRIVALS_PENDING], w[MAX_STEPS], w[NUM_WAITING_GIVEN], w[NUM_RUNNING_GIVEN] = (
        arrivals_pending, max_steps, waiting.shape[0], m,
    )  # fmt: skip
    columns = m + 8 * waiting.shape[0] + 64 + min(budget, max_num_seqs)  # see window_loop on first sizes
    req = np.empty((REQ_ROWS, columns), _I64)
    queues = np.empty((QUEUE_ROWS, columns), _I64)
    req[REQ_ID, :m] = rid0
    req[COMPUTED_OFFSET, :m] = comp0
    req[GENERATED_OFFSET, :m] = gen0
    req[FATE, :m] = RUNNING
    req[FATE_STEP, :m] = 0
    for pos in range(m):
        queues[TAIL_ORDER, pos] = pos
    crossings = np.zeros(bs, _I64)
    decoding = m
    if m > 0 and rules.still_prefilling(isl[rid0[m - 1]] + gen0[m - 1], comp0[m - 1]):
        decoding = m - 1
        w[TAIL_POS], w[TAIL_REQ], w[TAIL_COMPUTED] = m - 1, rid0[m - 1], comp0[m - 1]
        w[TAIL_NUM_TOKENS], w[TAIL_GENERATED] = isl[rid0[m - 1]] + gen0[m - 1], gen0[m - 1]
    for pos in range(decoding):
        _start_decoding(w, queues, crossings, pos, comp0[pos], gen0[pos], osl[rid0[pos]], 0)
    return w, req, queues, crossings


@njit(cache=True)
def window_loop(
    free: int,
    caching: bool,
    fifo_o: np.ndarray,
    fifo_b: np.ndarray,
    f_head: int,
    f_tail: int,
    seg_of: np.ndarray,
    rid0: np.ndarray,
    comp0: np.ndarray,
    gen0: np.ndarray,
    waiting: np.ndarray,
    isl: np.ndarray,
    osl: np.ndarray,
    gen_g: np.ndarray,
    bs: int,
    budget: int,
    max_num_seqs: int,
    arrivals_pending: bool,
    max_steps: int,
):  # type: ignore[no-untyped-def]
    """The loop of ``engine.sim.window._DecodeWindow`` on arrays: the free queue as (owner ``fifo_o``, blocks
    ``fifo_b``) segments [f_head, f_tail) with ``seg_of[request]`` its segment (updated in place, as ``gen_g``);
    running positions (request, computed and generated tokens), the waiting requests, the limits. Returns the
    window's raw records (unpacked by ``engine.sim.window.decode_window_compiled``)."""
    w, req, queues, crossings = _initial_state(
        free, caching, f_head, f_tail, rid0, comp0, gen0, waiting, isl, osl, bs, budget, max_num_seqs,
        arrivals_pending, max_steps,
    )  # fmt: skip
    free_queue = _recentred_free_queue(fifo_o, fifo_b, f_head, f_tail, w, seg_of)
    # First sizes for a cliff run (the 10,000-request bench: ~8 events and positions per request) without growing:
    # np.empty only reserves address space, pages are touched as they are used, so a generous size costs nothing
    # and saves the regrowth copies (each a fresh run of page faults).
    records = 16 * (rid0.shape[0] + waiting.shape[0]) + 256
    runs = np.empty(RUN_WIDTH * records, _I64)
    events = np.empty(EVENT_WIDTH * records, _I64)
    prefill = np.empty(PREFILL_WIDTH * records, np.float64)
    while (
        _run_window(free_queue, w, seg_of, req, queues, crossings, runs, events, prefill, waiting, isl, osl, gen_g)
        == NEED_ROOM
    ):
        used = w[NUM_POSITIONS]
        if used + min(budget, max_num_seqs) + 1 > req.shape[1]:
            columns = 2 * req.shape[1] + min(budget, max_num_seqs)
            req = _with_columns(req, used, columns)
            queues = _with_columns(queues, used, columns)
        releases = w[NUM_DECODING] + 2
        if w[FQ_HEAD] < releases or w[FQ_TAIL] + releases > free_queue.shape[1]:
            free_queue = _recentred_free_queue(free_queue[OWNER], free_queue[BLOCKS], w[FQ_HEAD], w[FQ_TAIL], w, seg_of)
        if w[NUM_RUN_RECORDS] + 2 * RUN_WIDTH > runs.shape[0]:
            runs = _with_length(runs, w[NUM_RUN_RECORDS], 2 * runs.shape[0])
        if w[NUM_EVENT_RECORDS] + 3 * EVENT_WIDTH > events.shape[0]:
            events = _with_length(events, w[NUM_EVENT_RECORDS], 2 * events.shape[0])
        if w[NUM_PREFILL_RECORDS] + PREFILL_WIDTH > prefill.shape[0]:
            prefill = _with_length(prefill, w[NUM_PREFILL_RECORDS], 2 * prefill.shape[0])
    return _window_records(w, free_queue, req, queues, runs, events, prefill)


@njit(cache=True)
def _window_records(
    w: np.ndarray, free_queue: np.ndarray, req: np.ndarray, queues: np.ndarray, runs: np.ndarray,
    events: np.ndarray, prefill: np.ndarray,
):  # type: ignore[no-untyped-def]  # fmt: skip
    """``window_loop``'s returned tuple, as views into the window's arrays (copies of a cliff run's ~10 MB of
    records took the 10,000-request bench's window from ~2,000 page faults to ~4,500): the step reached, the pool (free
    blocks, pending evictions, the free queue's owners and blocks), per position (request, computed and generated
    offsets, fate, its step), admission steps, partial admissions, completed prefills (request, step pairs),
    preempted still waiting (head last), requests taken from waiting, trace points, runs, prefill records, and the
    prefilling tail (position, computed, generated)."""
    m = w[NUM_RUNNING_GIVEN]
    n = w[NUM_POSITIONS]
    head, tail = w[FQ_HEAD], w[FQ_TAIL]
    n_prefilled = w[NUM_PREFILLED]
    prefilled = np.empty(2 * n_prefilled, _I64)
    for k in range(n_prefilled):
        prefilled[2 * k] = queues[PREFILLED_REQ, k]
        prefilled[2 * k + 1] = queues[PREFILLED_STEP, k]
    return (
        w[STEP],
        w[FREE],
        w[PENDING],
        free_queue[OWNER, head:tail],
        free_queue[BLOCKS, head:tail],
        req[REQ_ID, :n],
        req[COMPUTED_OFFSET, :n],
        req[GENERATED_OFFSET, :n],
        req[FATE, :n],
        req[FATE_STEP, :n],
        req[ADMITTED_STEP, m:n],
        queues[PARTIAL, : w[NUM_PARTIAL]],
        prefilled,
        queues[PREEMPTED_WAITING, : w[NUM_PREEMPTED_WAITING]],
        w[WAITING_TAKEN],
        events[: w[NUM_EVENT_RECORDS]],
        runs[: w[NUM_RUN_RECORDS]],
        prefill[: w[NUM_PREFILL_RECORDS]],
        w[TAIL_POS],
        w[TAIL_COMPUTED],
        w[TAIL_GENERATED],
    )


def _forget_stale_rules() -> None:
    """numba keys each cached function to its own file only (that file's timestamp, the function's bytecode), so
    machine code cached for this module keeps the ``engine.sim.rules`` it was compiled with after that file
    changes. The rules' digest is kept beside numba's cache; when it differs, every cached function of this module
    is forgotten (compiled again on first use) before anything is loaded."""
    kernels = [f for f in globals().values() if isinstance(f, CPUDispatcher)]
    cache_dir = Path(kernels[0]._cache.cache_path)  # NUMBA_CACHE_DIR, else __pycache__ beside this file
    digest = hashlib.sha256(Path(rules.__file__).read_bytes()).hexdigest()
    stamp = cache_dir / "window_kernel.rules.sha256"
    if stamp.is_file() and stamp.read_text() == digest:
        return
    for f in kernels:
        f._cache.flush()
    stamp.write_text(digest)


_forget_stale_rules()


def warm_up():  # type: ignore[no-untyped-def]
    """Compile ``window_loop`` for the argument types simulate passes (or load it from the cache) by running it on
    a tiny window: two decoding requests, one waiting."""
    a = np.array
    window_loop(
        10, True, a([-1], _I64), a([10], _I64), 0, 1, np.full(3, -1, _I64), a([0, 1], _I64), a([5, 5], _I64),
        a([1, 1], _I64), a([2], _I64), a([4, 4, 4], _I64), a([3, 3, 3], _I64), np.zeros(3, _I64), 4, 64, 8,
        False, 1000,
    )  # fmt: skip
    return window_loop
