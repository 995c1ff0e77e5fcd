"""The decode-window fast path: runs of steps in which every running request decodes (but for a prefilling tail),
planned from event to event — a completion, a preemption, an admission — instead of step by step.

A decoding request with c computed tokens needs a new block in the step that computes token c + 1 when
c mod block_size = 0, so in window step j those whose ``crossing_phase`` is j mod block_size cross into a new block
(``crossing``); over any block_size consecutive steps each of the decoders crosses once, so needs grow by their
count per block cycle and the first step whose needs exceed the free blocks is found by skipping whole cycles and
walking at most two (``decode_run_end``).

Events: a step whose needs exceed the free blocks preempts from the tail (most recently admitted first) until they
fit (in ``_decode_steps``, whose loop takes the decode-only steps and closes those that may admit with
``_close_step``); a request's last token frees its blocks after its step (``_finish_due``); in a step without
preemption, waiting requests are admitted while the budget, max_num_seqs and free blocks allow
(``_schedule_waiting``: ``FreePool.admit``, or the admission rule alone for a request with nothing cached). A
request whose (re)prefill does not fit the step's leftover budget stays at the tail as the prefilling request:
while it prefills, every step is taken one at a time (``_prefill_step``). The window ends when nobody runs, after
``max_steps``, or (with arrivals pending) after its first event; with arrivals pending it holds no prefilling
request.

The same loop exists compiled by numba (``engine.window_kernel.window_loop``), called by ``decode_window_compiled``
with the free queue as arrays; ``engine.window_jit`` says when it is loaded, ``config.WINDOW_LOOP`` when it is used.

Where each rule lives. The arithmetic of vLLM's rules is written once, in ``engine.sim.rules``, and both loops call
those very functions (the kernel compiles them with numba): blocks held and which are full (``held_blocks``, for
preemption and completion frees), the step a decoder needs a new block in (``crossing_phase``), how far decodes run
before the free blocks run out (``decode_run_end``), admission — prefix-cache hit, chunk, the full-sequence gate, blocks
held (``admission``, directly or through ``FreePool.admit``), how many the waiting pass may admit — none in a step that
preempted, up to max_num_seqs and the budget (``waiting_pass_slots``), whether the last running request is still
prefilling (``still_prefilling``), the prefilling tail's chunk and blocks (``prefill_chunk``), a prefill's priced
work (``prefill_pairs``, ``prefill_work``: a lone last prompt token is a decode), and the preemption walk — the tail
first, until the step's blocks fit (``preempt_from_tail``; each loop passes the one function that preempts its own
tail: ``_preempt_tail`` here and in the kernel). What stays written twice is the event loop itself and the data it
walks: the order of a step's parts (decodes, tail preemption, admissions, completions, the trace point), the
free-block queue (``FreePool`` here; arrays in ``_free_blocks`` and ``_evict_pending`` there), the completion heap,
and the window's records. numba compiles functions over arrays and numbers, not
a Python object's methods, so a shared loop would have to run on arrays here too, where element access costs a Python
loop several times its time on lists (the Python loop is the one a CLI call and the dashboard's first page run); the two
are held to each other and to the step-by-step reference by tests/unit/test_simulate.py and
tests/unit/test_sim_reference.py (every prediction bit for bit).
"""

from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import window_jit
from engine.sim import config
from engine.sim.free_pool import FreePool
from engine.sim.rules import (
    admission,
    crossing_phase,
    decode_run_end,
    full_sequence_fits,
    held_blocks,
    preempt_from_tail,
    prefill_chunk,
    prefill_pairs,
    prefill_work,
    still_prefilling,
    waiting_pass_slots,
)
from engine.sim.state import Fate

IntSeq = list[int] | np.ndarray  # a window's records: lists from the Python loop, arrays from the compiled one
_RUNNING, _PREEMPTED, _FINISHED = int(Fate.RUNNING), int(Fate.PREEMPTED), int(Fate.FINISHED)
_POS_MASK = 0xFFFFFFFF  # a completion heap key: the step of the last token << 32 | the position


@dataclass
class Window:
    """A planned run of steps, with the preemptions, completions and admissions vLLM would make inside it;
    positions ≥ the running count given are requests admitted in the window. Per position: ``fate`` (a ``Fate``)
    at step ``fate_step``; a position still running has computed ``computed_offset + steps`` and generated
    ``output_offset + steps`` tokens at the window's end."""

    active: np.ndarray  # decoding requests in each step
    ctx0: np.ndarray  # Σ computed_offset over them: step j reads ctx0 + (j − 1)·active cached tokens
    pre_tokens: np.ndarray  # prefill tokens in each step (the prefilling tail's chunk and admissions)
    pre_pairs: np.ndarray
    pre_kv: np.ndarray
    pre_seqs: np.ndarray
    sampled: np.ndarray  # first tokens sampled at the end of a prefill in each step
    prompt: np.ndarray  # prompt tokens counted in each step (pre_tokens but for a lone last prompt token)
    request_id: IntSeq
    computed_offset: IntSeq
    output_offset: IntSeq
    fate: IntSeq
    fate_step: IntSeq
    admitted_step: IntSeq  # step of admission of each position ≥ the running count given
    partial: IntSeq  # positions admitted with a partial chunk (their first token is in ``prefilled``)
    prefilled: IntSeq  # request, step of other completed prefills (flat pairs): the prefilling tail's
    preempted_waiting: IntSeq  # requests preempted in the window, still waiting (head last)
    waiting_taken: int  # requests taken from the waiting queue given
    events: IntSeq  # step, running, waiting, preempted so far, free blocks of each trace point (flat)


def _int64s(values: list[int]) -> np.ndarray:
    """A list of ints as an int64 array, packed by ``struct`` (about half np.array's time per element: a cliff
    run's window hands ~10⁶ record entries over)."""
    out = np.empty(len(values), dtype=np.int64)
    struct.pack_into(f"{len(values)}q", out, 0, *values)
    return out


def _float64s(values: list[float]) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    struct.pack_into(f"{len(values)}d", out, 0, *values)
    return out


def window_kernel(arrivals_pending: bool) -> Any:
    """The compiled window loop where it is used: per WINDOW_LOOP, once this process has it (see engine.window_jit),
    for windows with no arrival pending (a run without arrivals is one window; with arrivals, the thousands of short
    windows before the last arrival stay in Python, where converting the free queue would cost more than it saves)."""
    if config.WINDOW_LOOP == "python":
        return None
    if config.WINDOW_LOOP == "compiled":
        k = window_jit.kernel() or window_jit.load()
        if k is None:
            raise config.SimulationError(f"WINDOW_LOOP is 'compiled' but numba is unavailable: {window_jit.load_error}")
        return k
    return None if arrivals_pending else window_jit.kernel()


class _DecodeWindow:
    """One window's plan in the making (see the module docstring). Positions index the running requests given,
    then those admitted in the window; a position's tokens at window step j are ``computed_offset + j`` computed and
    ``output_offset + j`` generated while it decodes. The one request that may be prefilling is the tail
    (``prefill_pos``, −1 when none), taken a step at a time. Records are flat lists (NumPy converts flat lists of
    numbers far faster than lists of tuples): runs of steps (decoders, Σ computed_offset, steps), prefill work per
    step (step, tokens, pairs, kv, seqs, sampled, prompt), trace points, admissions and completed prefills."""

    __slots__ = (
        "admitted_step",
        "arrivals_pending",
        "block_size",
        "computed_offset",
        "crossing",
        "events",
        "extra",
        "fate",
        "fate_step",
        "finished_blocks",
        "finished_full",
        "first_decoders",
        "generated",
        "head_tokens",
        "heap",
        "isl",
        "max_num_seqs",
        "max_steps",
        "num_decoding",
        "num_preempted",
        "osl",
        "output_offset",
        "partial_pos",
        "phase",
        "pool",
        "preempted_output",
        "preempted_waiting",
        "prefill_blocks",
        "prefill_computed",
        "prefill_out",
        "prefill_pos",
        "prefill_req",
        "prefill_target",
        "prefilled",
        "request_id",
        "segs",
        "step",
        "stop_after_event",
        "sum_computed",
        "tail_candidates",
        "token_budget",
        "waiting",
        "waiting_taken",
        "work",
    )

    def __init__(
        self,
        pool: FreePool,
        running: Any,
        waiting: np.ndarray,
        isl: list[int],
        osl: list[int],
        generated: np.ndarray,
        limits: tuple[int, int, int],
        arrivals_pending: bool,
        max_steps: int,
    ) -> None:
        self.pool = pool
        self.block_size, self.token_budget, self.max_num_seqs = limits
        self.isl, self.osl, self.generated = isl, osl, generated
        self.arrivals_pending, self.max_steps = arrivals_pending, max_steps
        self.request_id = running.request_id.tolist()
        self.computed_offset = running.num_computed_tokens.tolist()
        self.output_offset = running.num_output_tokens.tolist()
        m = len(self.request_id)
        self.fate, self.fate_step = [_RUNNING] * m, [0] * m
        self.prefill_pos = -1  # the prefilling tail: its request, computed tokens, tokens to reach, blocks, output
        self.prefill_req = self.prefill_computed = self.prefill_target = self.prefill_out = 0
        self.prefill_blocks = 0  # its chunk's new blocks in a step that preempts it
        if m and still_prefilling(isl[self.request_id[-1]] + self.output_offset[-1], self.computed_offset[-1]):
            self.prefill_pos = m - 1
            self.prefill_req, self.prefill_computed = self.request_id[-1], self.computed_offset[-1]
            self.prefill_out = self.output_offset[-1]
            self.prefill_target = isl[self.prefill_req] + self.prefill_out
        self.num_decoding = m if self.prefill_pos < 0 else m - 1
        self._init_decoders(running)
        self.tail_candidates = list(range(m))  # positions not yet passed by tail preemption (see _preempt_tail)
        self.step = 0
        self.segs: list[int] = []
        self.extra: list[float] = []
        self.events: list[int] = []
        self.admitted_step: list[int] = []
        self.partial_pos: list[int] = []
        self.prefilled: list[int] = []
        self.waiting = waiting.tolist()
        self.preempted_waiting: list[int] = []  # preempted here, still waiting (head last)
        self.waiting_taken = 0
        self.num_preempted = 0
        self.preempted_output: dict[int, int] = {}  # generated tokens of those preempted here (into generated)
        self.head_tokens = -1  # the waiting head's tokens, all of which its blocks must fit (−1: not known yet)
        self.stop_after_event = False  # with arrivals pending: the window ends after its first event
        self.work: list[float] | None = None  # prefill work of the step being planned (tokens, pairs, kv, ...)
        self.finished_blocks = self.finished_full = 0  # blocks (full ones) of requests that finished as prefills ended

    def _init_decoders(self, running: Any) -> None:
        """Per-window set-up in whole-array steps (with arrivals a run has thousands of short windows)."""
        n, bs = self.num_decoding, self.block_size
        comp, out = running.num_computed_tokens[:n], running.num_output_tokens[:n]
        phase = crossing_phase(comp, bs)
        self.crossing = np.bincount(phase, minlength=bs).tolist()
        # each position's crossing phase, looked up when it stops decoding (a prefilling tail's is set as it starts)
        self.phase = phase.tolist() + [0] * (len(self.request_id) - n)
        self.heap = (((running.max_tokens[:n] - out) << 32) | np.arange(n)).tolist()  # see _POS_MASK
        heapq.heapify(self.heap)
        self.first_decoders = np.flatnonzero(out == 0).tolist()
        self.sum_computed = sum(self.computed_offset[:n])

    def waiting_head(self) -> tuple[int, int]:
        """The head of the waiting queue (preempted requests first, most recent first) and its generated tokens."""
        r = self.preempted_waiting[-1] if self.preempted_waiting else self.waiting[self.waiting_taken]
        g = self.preempted_output.get(r)
        return r, int(self.generated[r]) if g is None else g

    def run(self) -> Window | None:
        """Plan the window, applying its allocations and frees to the pool in order; None when the very first step
        needs the general scheduler."""
        self.pool.flush()
        while self.step < self.max_steps and not self.stop_after_event:
            if not (self._prefill_step() if self.prefill_pos >= 0 else self._decode_steps()):
                break
        if self.preempted_output:
            self.generated[_int64s(list(self.preempted_output))] = _int64s(list(self.preempted_output.values()))
        if self.step == 0:
            return None
        return window_from_records(
            self.step, _int64s(self.segs), _float64s(self.extra), self.prefill_pos, self.prefill_computed,
            self.prefill_out, self.first_decoders, self.prefilled, _int64s(self.request_id),
            _int64s(self.computed_offset), _int64s(self.output_offset), _int64s(self.fate), _int64s(self.fate_step),
            _int64s(self.admitted_step), self.partial_pos, self.preempted_waiting, self.waiting_taken,
            _int64s(self.events),
        )  # fmt: skip

    def _close_step(self, j: int, left: int, num_running: int, prefilling: bool) -> None:
        """The end of step j, one that may admit (``num_running`` scheduled before it, ``left`` of the budget; a step
        with the prefilling tail, or a decode step whose head fits): its admissions, its prefill work recorded,
        the blocks of what finished freed, and its trace point. Ends the window when nobody is left."""
        slots = waiting_pass_slots(0, left, num_running, self.max_num_seqs)  # as the kernel's _window_step asks
        partial = slots > 0 and self._schedule_waiting(j, left, slots)
        if self.work is not None:
            self.extra.extend((j, *self.work))
            self.work = None
        if self.finished_blocks or (self.heap and self.heap[0] >> 32 <= j):
            self._finish_due(j)
            self.finished_blocks = self.finished_full = 0
        self.step = j
        running_now = self.num_decoding + (1 if self.prefill_pos >= 0 else 0)
        waiting_now = len(self.preempted_waiting) + len(self.waiting) - self.waiting_taken
        point = (j, running_now, waiting_now, self.num_preempted, self.pool.num_free_blocks)
        self.events.extend(point)
        if partial and not prefilling:
            self.events.extend(point)  # the reference closes its decode run here and records the step once more
        if not (running_now or waiting_now):
            self.stop_after_event = True

    def _prefill_step(self) -> bool:
        """A step with the prefilling tail: its chunk takes the budget the decodes leave, unless the step's blocks
        do not fit; then it is preempted first and the decoders after it until the decodes fit, and the steps go on
        in ``_decode_steps``. False when the window ends."""
        j = self.step + 1
        bs, pool = self.block_size, self.pool
        need_decode = self.crossing[j % bs]
        computed = self.prefill_computed
        chunk, need_prefill = prefill_chunk(self.prefill_target, computed, self.token_budget - self.num_decoding, bs)
        if need_decode + need_prefill > pool.num_free_blocks:
            return self._decode_steps(prefill_blocks=need_prefill)  # which preempts it first
        self.segs.extend((self.num_decoding, self.sum_computed, 1))
        pool.allocate(need_decode + need_prefill)
        tokens, pairs, prompt = prefill_work(chunk, computed, self.prefill_target)
        self.work = [tokens, pairs, computed, 1, 0, prompt]
        self.prefill_computed = computed + chunk
        num_running = self.num_decoding + 1  # counted before its prefill ends (and it decodes on)
        left = self.token_budget - self.num_decoding - chunk
        if self.prefill_computed == self.prefill_target:
            self.work[4] = 1  # its prefill ends: the last position samples a token
            self._prefill_done(j)
        self._close_step(j, left, num_running, True)
        return True

    def _prefill_done(self, j: int) -> None:
        pos, r, ntok = self.prefill_pos, self.prefill_req, self.prefill_target
        self.prefilled += (r, j)
        g = self.prefill_out + 1
        self.computed_offset[pos] = ntok - j
        self.output_offset[pos] = g - j
        if g >= self.osl[r]:
            self.fate[pos], self.fate_step[pos] = _FINISHED, j
            self.finished_blocks, self.finished_full = held_blocks(ntok, self.block_size)
        else:
            self._start_decoding(pos, r, ntok, g, j)
        self.prefill_pos = -1

    def _start_decoding(self, pos: int, r: int, num_tokens: int, g: int, j: int) -> None:
        """Position ``pos`` (request r, its prefill of ``num_tokens`` done in step j, ``g`` generated) decodes on."""
        phase = crossing_phase(num_tokens - j, self.block_size)
        self.phase[pos] = phase
        self.crossing[phase] += 1
        self.num_decoding += 1
        self.sum_computed += num_tokens - j
        heapq.heappush(self.heap, ((j + self.osl[r] - g) << 32) | pos)

    def _decode_steps(self, prefill_blocks: int = -1) -> bool:
        """Decode-only steps, event after event, until a prefilling tail (admitted with a partial chunk) or the
        window's end (False). The head of waiting is admitted in a step only if its decodes fit without preemption
        and blocks for its whole sequence are free (full_sequence_fits, whatever its prefix-cache hit): that step is
        closed by ``_close_step``. When they are not, nothing can be admitted before the next event (free blocks
        only shrink), so the window jumps to it (``decode_run_end``): a completion, or the first step whose needs
        exceed the free blocks, which preempts from the tail until its blocks fit (``preempt_from_tail`` with
        ``_preempt_tail``; ``prefill_blocks`` ≥ 0: the next step has the prefilling tail, whose chunk's blocks
        ``_prefill_step`` found not to fit beside the decodes', so it goes first), then runs. A cliff run has tens of
        thousands of such steps: one loop in one frame."""
        pool, heap, fate, crossing, bs = self.pool, self.heap, self.fate, self.crossing, self.block_size
        budget, max_num_seqs, max_steps = self.token_budget, self.max_num_seqs, self.max_steps
        preempted_waiting, n_waiting = self.preempted_waiting, len(self.waiting)
        events_add, segs_add = self.events.extend, self.segs.extend
        heappop, arrivals_pending = heapq.heappop, self.arrivals_pending
        while True:
            step = self.step
            j = step + 1
            need = crossing[j % bs]  # step j's new blocks; −1 once it is known to preempt nobody
            decoding = self.num_decoding
            free = pool.num_free_blocks
            if prefill_blocks >= 0:  # step j's prefilling tail: its chunk's blocks do not fit beside the decodes'
                need += prefill_blocks
                self.prefill_blocks, prefill_blocks = prefill_blocks, -1
            else:
                if need <= free and (preempted_waiting or self.waiting_taken < n_waiting):
                    if self.head_tokens < 0:
                        r, g = self.waiting_head()
                        self.head_tokens = self.isl[r] + g
                    # with the decodes' blocks taken; a step reached here preempts nobody (one that does is taken
                    # below and admits nothing); the cheaper test to fail first, as it does in most steps of a cliff
                    if full_sequence_fits(self.head_tokens, bs, free - need) and waiting_pass_slots(
                        0, budget - decoding, decoding, max_num_seqs
                    ):
                        if arrivals_pending:
                            return False  # a possible admission before the next arrival: the general scheduler's
                        segs_add((decoding, self.sum_computed, 1))
                        pool.allocate(need)  # the step runs: its decodes allocate first, then admission
                        self._close_step(j, budget - decoding, decoding, False)
                        if self.prefill_pos >= 0 or self.stop_after_event or j >= max_steps:
                            return True  # run takes the prefilling tail, or ends the window
                        continue
                if decoding == 0:
                    return False
                # unless step j's own decodes do not fit (a cliff's usual step: decode_run_end would stop before it),
                # decodes run to the next event
                if need <= free:
                    if len(heap) > 2 * decoding + 64:  # preempted positions' entries outnumber the live ones
                        heap[:] = [k for k in heap if not fate[k & _POS_MASK]]
                        heapq.heapify(heap)
                    key = heap[0]
                    while fate[key & _POS_MASK]:
                        heappop(heap)
                        key = heap[0]
                    next_finish = key >> 32
                    horizon = next_finish if next_finish < max_steps else max_steps
                    run_end, blocks = decode_run_end(crossing, step, horizon, free, decoding, bs)
                    segs_add((decoding, self.sum_computed, run_end - step))  # run_end > step: step j fits
                    pool.allocate(blocks)
                    if run_end - step > 1:  # a trace point at the end of a long run, before the event that ends it
                        waiting_now = len(preempted_waiting) + n_waiting - self.waiting_taken
                        events_add((run_end, decoding, waiting_now, self.num_preempted, pool.num_free_blocks))
                    self.step = step = run_end
                    if run_end == horizon:
                        if horizon < next_finish:
                            return False  # the step limit
                        j, need = run_end, -1  # the next completion: it frees its blocks after the step
                    else:
                        j = run_end + 1  # step j needs more blocks than are free
                        need = crossing[j % bs]
            if need >= 0:  # preempt from the tail until step j's needs fit; then it runs
                if need > pool.num_free_blocks and preempt_from_tail(self, need - pool.num_free_blocks, _preempt_tail):
                    need = crossing[j % bs]  # the prefilling tail went first, then decoders: the rest's blocks
                segs_add((self.num_decoding, self.sum_computed, 1))
                pool.allocate(need)
            if heap and heap[0] >> 32 <= j:
                self._finish_due(j)
            self.step = j
            running_now = self.num_decoding
            waiting_now = len(preempted_waiting) + n_waiting - self.waiting_taken
            events_add((j, running_now, waiting_now, self.num_preempted, pool.num_free_blocks))
            if arrivals_pending or j >= max_steps or not (running_now or waiting_now):
                self.stop_after_event = True  # with arrivals pending the window ends after its first event
                return False

    def _schedule_waiting(self, j: int, left: int, slots: int) -> bool:
        """Admissions from the head of the waiting queue in step j, at most ``slots`` (``waiting_pass_slots``) while the
        budget ``left`` lasts (``FreePool.admit`` for a request with blocks still cached; the others, most in a cliff
        run, whose re-admissions mostly find their blocks evicted, need only the rule and an allocation). True when the
        last one admitted is left prefilling (a partial chunk). Runs once per admission step (tens of thousands in a
        cliff run, ~7 admissions each): its state is held in locals, the step's token, sequence and prompt counts are
        summed once at the end, and the allocations of uncached admissions are handed to the pool together (before a
        cached one's look-up, which evicts them first, and at the end)."""
        pool, bs, osl, isl = self.pool, self.block_size, self.osl, self.isl
        cached_owners = pool.segment  # requests whose full blocks may still be cached (FreePool.admit looks them up)
        preempted_waiting, waiting, taken = self.preempted_waiting, self.waiting, self.waiting_taken
        n_waiting = len(waiting)
        request_id, fate, fate_step = self.request_id, self.fate, self.fate_step
        computed_offset, output_offset = self.computed_offset, self.output_offset
        generated, preempted_output = self.generated, self.preempted_output
        crossing, heap, heappush = self.crossing, self.heap, heapq.heappush
        phase_add, sum_computed = self.phase.append, self.sum_computed
        left0, pairs, kv, partial = left, 0.0, 0, False
        pos0 = pos = len(request_id)
        pos_end = pos0 + slots  # waiting_pass_slots: admissions end below it
        finished_now = []  # positions whose prefill's token was their last
        free = pool.num_free_blocks  # less the allocations of uncached admissions not handed to the pool yet
        while pos < pos_end:  # a spent budget stops it too: the head's chunk is 0 tokens (admission)
            # the head: the last one preempted here (its output in preempted_output), else the next waiting one
            if preempted_waiting:
                r = preempted_waiting.pop()
                g, fresh = preempted_output[r], False
            elif taken < n_waiting:
                r = waiting[taken]
                taken += 1
                g, fresh = int(generated[r]), True
            else:
                break
            ntok = isl[r] + g
            if r in cached_owners:
                pool.allocate(pool.num_free_blocks - free)  # the uncached ones' first: they came first
                hit_tokens, chunk, blocks = pool.admit(r, ntok, left, bs)
                free = pool.num_free_blocks
                kv += hit_tokens
            else:  # nothing cached to hit (0 blocks, 0 tokens): FreePool.admit would add only the allocation
                hit_tokens, chunk, blocks = admission(ntok, 0, left, bs, free)
                free -= blocks
            if not chunk:  # it stays at the head
                if fresh:
                    taken -= 1
                else:
                    preempted_waiting.append(r)
                break
            pairs += prefill_pairs(chunk, hit_tokens)
            left -= chunk
            request_id.append(r)  # its fate, admission step and place at the tail are added after the loop
            if chunk < ntok - hit_tokens:  # a partial chunk: it goes on prefilling at the tail in the next steps
                self.prefill_pos, self.prefill_req, self.prefill_computed = pos, r, hit_tokens + chunk
                self.prefill_target, self.prefill_out = ntok, g
                computed_offset.append(0)
                output_offset.append(0)
                phase_add(0)  # set as it starts decoding
                self.partial_pos.append(pos)
                partial = True
                break
            g += 1  # the prefill's last position samples a token
            offset = ntok - j
            computed_offset.append(offset)
            output_offset.append(g - j)
            if g >= osl[r]:  # done with this token: its blocks return after the step
                finished_now.append(pos)
                phase_add(0)  # never decodes
                self.finished_blocks += blocks
                self.finished_full += ntok // bs  # all its tokens computed: held_blocks(ntok)
            else:  # it decodes from the next step (_start_decoding, inlined: once per admission)
                phase = crossing_phase(offset, bs)
                phase_add(phase)
                crossing[phase] += 1
                sum_computed += offset
                heappush(heap, ((j + osl[r] - g) << 32) | pos)
            pos += 1
        pool.allocate(pool.num_free_blocks - free)
        admitted = pos - pos0 + partial  # the partial one is not past pos
        sampled = admitted - partial  # every admission but a partial one completes its prefill: one token each
        self.num_decoding += sampled - len(finished_now)
        self.sum_computed, self.waiting_taken = sum_computed, taken
        if admitted:
            self.tail_candidates.extend(range(pos0, pos0 + admitted))
            fate += [_RUNNING] * admitted
            fate_step += [0] * admitted
            self.admitted_step.extend([j] * admitted)
            for p in finished_now:
                fate[p], fate_step[p] = _FINISHED, j
            self.head_tokens = -1  # the head changed: its tokens are looked up again
        tokens = left0 - left
        work = self.work
        if work is None:  # a decode step's prefill work is its admissions' (recorded here, whatever they are)
            self.extra.extend((j, tokens, pairs, kv, admitted, sampled, tokens))
        else:  # a prefill step's adds them to its tail's chunk, recorded by _close_step
            work[0] += tokens
            work[1] += pairs
            work[2] += kv
            work[3] += admitted
            work[4] += sampled
            work[5] += tokens
        return partial

    def _finish_due(self, j: int) -> None:
        """Requests whose last token came in step j free their blocks after it (anonymous: nobody can hit them)."""
        heap, fate, bs = self.heap, self.fate, self.block_size
        freed, freed_full = self.finished_blocks, self.finished_full
        while heap and heap[0] >> 32 <= j:
            i = heapq.heappop(heap) & _POS_MASK
            if fate[i]:
                continue
            fate[i], self.fate_step[i] = _FINISHED, j
            offset = self.computed_offset[i]
            self.crossing[self.phase[i]] -= 1
            self.num_decoding -= 1
            self.sum_computed -= offset
            blocks, full = held_blocks(offset + j, bs)
            freed += blocks
            freed_full += full
        if freed:
            self.pool.free(-1, freed, freed_full)


def _preempt_tail(w: _DecodeWindow) -> int:
    """vLLM's ``_preempt_request`` for the tail of running in step ``w.step + 1`` (for ``preempt_from_tail``):
    its blocks freed (full ones stay hittable, see FreePool.free), its progress forgotten, and to the front of
    waiting, where it needs all its tokens back. Returns its blocks plus its share of the step's need (the
    prefilling tail's chunk blocks, or a decoder's new block if it crosses into one in this step); −1 when nobody is
    left. ``tail_candidates`` holds the positions tail preemption has not passed yet, in order: above the last one
    popped every position is preempted or finished until admissions append more, so popping it visits what walking
    down from the tail would."""
    candidates, fate = w.tail_candidates, w.fate
    position = -1
    while candidates:
        position = candidates.pop()
        if not fate[position]:
            break
        position = -1
    if position < 0:
        return -1
    bs, step = w.block_size, w.step
    request = w.request_id[position]
    if position == w.prefill_pos:  # its progress is in the prefill fields
        computed, output, num_tokens = w.prefill_computed, w.prefill_out, w.prefill_target
        w.prefill_pos = -1
        share = w.prefill_blocks
    else:
        offset = w.computed_offset[position]
        computed = offset + step
        # it had computed all but its last sampled token: its next prefill is computed + 1 tokens
        output, num_tokens = w.output_offset[position] + step, computed + 1
        phase = w.phase[position]
        share = 1 if phase == (step + 1) % bs else 0
        w.crossing[phase] -= 1
        w.num_decoding -= 1
        w.sum_computed -= offset
    blocks, full = held_blocks(computed, bs)
    w.pool.free(request, blocks, full)
    fate[position], w.fate_step[position] = _PREEMPTED, step + 1
    w.preempted_output[request] = output
    w.preempted_waiting.append(request)
    w.num_preempted += 1
    w.head_tokens = num_tokens
    return blocks + share


def decode_window(
    pool: FreePool,
    running: Any,
    waiting: np.ndarray,
    isl: list[int],
    osl: list[int],
    generated: np.ndarray,
    limits: tuple[int, int, int],
    arrivals_pending: bool,
    max_steps: int,
) -> Window | None:
    """Plan a decode window on the Python loop (``limits``: block size, token budget, max_num_seqs); see
    ``_DecodeWindow``. ``generated`` (per request, not running) receives the output of those preempted in it."""
    return _DecodeWindow(pool, running, waiting, isl, osl, generated, limits, arrivals_pending, max_steps).run()


def window_from_records(
    n_steps: int,
    segs: IntSeq,
    extra: list[float] | np.ndarray,
    prefill_pos: int,
    prefill_computed: int,
    prefill_out: int,
    first_decoders: list[int],
    prefilled: IntSeq,
    request_id: IntSeq,
    computed_offset: IntSeq,
    output_offset: IntSeq,
    fate: IntSeq,
    fate_step: IntSeq,
    admitted_step: IntSeq,
    partial_pos: IntSeq,
    preempted_waiting: IntSeq,
    waiting_taken: int,
    events: IntSeq,
) -> Window:
    """A window's per-step arrays from its flat records (the Python loop's lists or the compiled loop's arrays)."""
    active = np.empty(n_steps, dtype=np.int64)
    ctx0 = np.empty(n_steps, dtype=np.int64)
    if len(segs):
        sg = np.asarray(segs, dtype=np.int64).reshape(-1, 3)
        active = np.repeat(sg[:, 0], sg[:, 2])
        ctx0 = np.repeat(sg[:, 1], sg[:, 2])
    pre = np.zeros((6, n_steps))
    if len(extra):
        ex = np.asarray(extra, dtype=float).reshape(-1, 7)
        pre[:, ex[:, 0].astype(np.int64) - 1] = ex[:, 1:].T
    if prefill_pos >= 0:
        computed_offset[prefill_pos] = prefill_computed - n_steps
        output_offset[prefill_pos] = prefill_out - n_steps
    # A running request that has generated nothing yet (its last prompt token left for a step of its own, which the
    # reference takes as a decode) samples its first token in step 1 unless preempted there.
    if first_decoders:
        firsts = [
            x for i in first_decoders if fate[i] != _PREEMPTED or fate_step[i] > 1 for x in (int(request_id[i]), 1)
        ]
        prefilled = np.concatenate([np.asarray(firsts, dtype=np.int64), np.asarray(prefilled, dtype=np.int64)])
    return Window(
        active,
        ctx0,
        *pre,
        request_id,
        computed_offset,
        output_offset,
        fate,
        fate_step,
        admitted_step,
        partial_pos,
        prefilled,
        preempted_waiting,
        waiting_taken,
        events,
    )


def decode_window_compiled(
    kernel: Any,
    pool: FreePool,
    running: Any,
    waiting: np.ndarray,
    isl: np.ndarray,
    osl: np.ndarray,
    generated: np.ndarray,
    limits: tuple[int, int, int],
    arrivals_pending: bool,
    max_steps: int,
) -> Window | None:
    """``decode_window`` with its event loop in compiled code (``engine.window_kernel.window_loop``): the same
    window. The free queue goes in as arrays and comes back as the pool's deque and owner map; that costs a pass
    over the queue, so this pays for long windows (a run without arrivals is one) rather than thousands of short
    ones."""
    bs, budget, max_num_seqs = limits
    r_id, r_comp, r_gen = running.request_id, running.num_computed_tokens, running.num_output_tokens
    fifo = pool.segments()
    fifo_o = np.fromiter((s[0] for s in fifo), dtype=np.int64, count=len(fifo))
    fifo_b = np.fromiter((s[1] for s in fifo), dtype=np.int64, count=len(fifo))
    seg_of = np.full(len(generated), -1, dtype=np.int64)
    owned = np.flatnonzero(fifo_o >= 0)
    seg_of[fifo_o[owned]] = owned
    decoding = len(r_id) - (1 if len(r_id) and still_prefilling(isl[r_id[-1]] + r_gen[-1], r_comp[-1]) else 0)
    first_decoders = np.flatnonzero(r_gen[:decoding] == 0).tolist()
    (
        steps, num_free, pending, fifo_o, fifo_b, request_id, computed_offset, output_offset, fate, fate_step,
        admitted_step, partial_pos, prefilled, preempted_waiting, waiting_taken, events, segs, extra, prefill_pos,
        prefill_computed, prefill_out,
    ) = kernel(
        int(pool.num_free_blocks), pool.caching, fifo_o, fifo_b, 0, len(fifo_o), seg_of,
        np.ascontiguousarray(r_id, dtype=np.int64), np.ascontiguousarray(r_comp, dtype=np.int64),
        np.ascontiguousarray(r_gen, dtype=np.int64), np.ascontiguousarray(waiting, dtype=np.int64),
        isl, osl, generated, bs, budget, max_num_seqs, arrivals_pending, max_steps,
    )  # fmt: skip
    pool.num_free_blocks = int(num_free)
    pool.set_segments([[o, b] for o, b in zip(fifo_o.tolist(), fifo_b.tolist(), strict=True)], int(pending))
    if steps == 0:
        return None
    return window_from_records(
        int(steps), segs, extra, int(prefill_pos), int(prefill_computed), int(prefill_out), first_decoders,
        prefilled, request_id, computed_offset, output_offset, fate, fate_step, admitted_step, partial_pos,
        preempted_waiting, int(waiting_taken), events,
    )  # fmt: skip
