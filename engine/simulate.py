"""A vLLM-V1-like scheduler simulation: the cliff — KV fills, requests are preempted and recomputed — predicted.

Rules reproduced from vLLM v1's ``Scheduler.schedule`` and ``KVCacheManager.allocate_slots``:

- One token budget per step (max_num_batched_tokens). RUNNING requests are served first, in order: a decoding
  request takes 1 token, a prefilling one min(remaining prompt, budget left) (chunked prefill).
- Each scheduled request needs ceil((computed + new) / block_size) blocks. When the free pool cannot cover it, the
  most recently admitted running request (the tail of the running list) is preempted: its blocks are freed, its
  progress is forgotten (recompute), and it goes to the FRONT of the waiting queue. If the tail is the request
  itself, it is preempted and scheduling of running requests stops.
- WAITING requests are admitted only in steps without preemption, while the budget lasts, while fewer than
  max_num_seqs run, and while blocks for ALL their tokens are free (``full_sequence_fits``: vLLM's
  ``scheduler_reserve_full_isl``, on by default; its ``watermark`` defaults to 0 and is not modelled here); a resumed
  request re-prefills its prompt and everything it had generated, less its prefix-cache hit: its full blocks stay
  hittable in the free queue until evicted (``_FreePool``); its partial last block goes to the queue's front.
- A request emits a token when its computed tokens reach its length; it finishes at ``osl`` tokens, freeing blocks.
- vLLM reserves one null block, so the pool holds ``kv_blocks − 1``.

The specification these rules are tested against is ``engine.sim.reference`` (vLLM's scheduler written out plainly),
itself held step for step to vLLM's real scheduler (``python -m engine parity``).

Speed: steps where every running request decodes and nothing can be admitted are identical but for context growth,
so the simulator jumps k steps at once to the next event — a completion, the first step whose block allocations do
not fit (a preemption), an admission, or an arrival. Such a "window" also carries the one request that can be
prefilling at a time (the most recently admitted: chunked prefill gives it whatever budget the decodes leave), taking
its steps one by one, so a run without arrivals is a single window; all its steps are priced in one vectorised call.
A request with exactly one prompt token left is priced and counted as a decode, as the general scheduler (which
cannot tell the two apart) does. The window's event loop (tens of thousands of preemptions and re-admissions in a
cliff run) also exists compiled by numba (``engine.window_kernel``), used once the process has loaded it
(``engine.window_jit``; ``WINDOW_LOOP``): the same run, ~5× faster. DP replicas are simulated independently behind
a round-robin router (all requests arrive at t=0 in the paper's setting). PP is simulated per pipeline round
(see ``engine.perf``) with a token budget of pp × max_num_batched_tokens per round. A `vllm bench serve` client
(engine.arrivals) gives arrival times, or, with a concurrency cap, sends each next request when one finishes
(``_client_finished``); its requests not yet sent arrive at +inf (``_next_arrival``).
"""

from __future__ import annotations

import gc
import heapq
from collections import deque
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np
import polars as pl

from engine import window_jit
from engine.arrivals import ArrivalProcess, ClientLoop, FrontendCost, frontend_intake
from engine.catalog import load_model, resolve_device
from engine.memory import MemoryPlan, memory_plan_for
from engine.perf import Calibration, StepCost, StepModel
from engine.scenario import Scenario
from engine.workload import parse_workload, request_lengths

IntSeq = list[int] | np.ndarray  # a window's records: lists from the Python loop, arrays from the compiled one
TIMELINE_ROWS = 1500
USE_DECODE_WINDOWS = True  # False: every step through the general scheduler (the reference the tests compare)
# The decode window's event loop: "auto" (compiled once loaded, see engine.window_jit), "python" or "compiled"
# (loads, and compiles if need be, numba's kernel first; tests run both against the step-by-step reference).
WINDOW_LOOP = "auto"
MAX_STEPS = 20_000_000
TIMELINE_COLUMNS = [
    "t_s",
    "running",
    "waiting",
    "kv_usage",
    "prompt_tokens_per_s",
    "generation_tokens_per_s",
    "preemptions_total",
    "hbm_bw_util",
    "compute_util",
]
REQUEST_COLUMNS = [
    "request_id",
    "isl",
    "osl",
    "arrival_s",
    "first_scheduled_s",
    "first_token_s",
    "finished_s",
    "num_preemptions",
    "queue_s",
    "ttft_s",
    "tpot_s",
    "e2e_s",
]


class SimulationError(ValueError):
    """A scenario that cannot be simulated (infeasible layout, a request longer than the cache holds)."""


@dataclass
class Prediction:
    scenario: Scenario
    memory: MemoryPlan
    timeline: pl.DataFrame
    requests: pl.DataFrame
    summary: dict[str, Any]
    calibration: Calibration = field(default_factory=Calibration)
    client_sent_s: np.ndarray | None = None  # a bench client's send time per request (its own clock's start)
    engine_steps: int = 0  # scheduler steps (PP rounds) over all replicas: the frontend gets one output message each


class _Trace:
    """Per-replica records at step/jump ends (cumulative counters, so any later binning conserves totals).

    Windows add their records as whole arrays (tens of thousands per run), general steps one row at a time;
    ``finish`` joins them, in order, into one array per field."""

    FIELDS = (
        "t",
        "running",
        "waiting",
        "used_blocks",
        "prompt_total",
        "gen_total",
        "preempt_total",
        "bytes_total",
        "flops_total",
    )
    INT_FIELDS = frozenset({"running", "waiting", "used_blocks", "preempt_total"})

    def __init__(self) -> None:
        self._rows: list[tuple[float, ...]] = []
        self._blocks: list[tuple[np.ndarray, ...]] = []
        self.t = self.running = self.waiting = self.used_blocks = self.preempt_total = np.empty(0)
        self.prompt_total = self.gen_total = self.bytes_total = self.flops_total = np.empty(0)

    def row(self, *values: float) -> None:
        self._rows.append(values)

    def block(self, *columns: np.ndarray) -> None:
        self._flush_rows()
        self._blocks.append(columns)

    def _flush_rows(self) -> None:
        if self._rows:
            self._blocks.append(tuple(np.array(self._rows, dtype=float).T))
            self._rows = []

    def finish(self) -> None:
        self._flush_rows()
        for k, name in enumerate(self.FIELDS):
            col = np.concatenate([b[k] for b in self._blocks])
            setattr(self, name, col.astype(np.int64) if name in self.INT_FIELDS else col.astype(float))


@dataclass
class _Totals:
    compute_s: float = 0.0
    memory_s: float = 0.0
    comm_s: float = 0.0
    overhead_s: float = 0.0
    busy_s: float = 0.0
    steps: int = 0


class _FreePool:
    """vLLM's free-block queue. With prefix caching (v1's default) a preempted request's freed full blocks keep their
    contents (and hashes) until evicted; allocation evicts from the front (least recently freed first, and a
    request's last blocks before its first), so a request re-admitted soon after its preemption finds its prefix
    still cached. A request's partial last block has no hash: vLLM puts it at the FRONT of the queue, to be reused
    first (``BlockPool.free_blocks``; ``engine.sim.reference`` spells it out), and nobody can hit it.

    The queue is a deque of [owner, blocks] segments (owner −1: anonymous). Evictions are applied lazily
    (``pending``): the queue only ever loses blocks from its front and gains them at its back, and never holds
    fewer than are allocated, so evicting a sum of allocations at once leaves it as evicting each in turn would
    have — as long as nothing looks at a segment in between (``cached`` and ``reclaim`` flush first)."""

    def __init__(self, blocks: int, caching: bool) -> None:
        self.free = blocks
        self.caching = caching
        self.fifo: deque[list[int]] = deque([[-1, blocks]])
        self.segment: dict[int, list[int]] = {}  # owner → its segment still in the queue
        self.pending = 0  # blocks allocated but not yet evicted from the queue

    def alloc(self, k: int) -> None:
        self.free -= k
        self.pending += k

    def flush(self) -> None:
        """Evict the pending allocations from the front of the queue."""
        k = self.pending
        self.pending = 0
        if not self.caching:
            return
        fifo, segment = self.fifo, self.segment
        while k > 0:
            seg = fifo[0]
            if seg[1] > k:
                seg[1] -= k
                return
            k -= seg[1]
            seg[1] = 0
            fifo.popleft()
            if seg[0] >= 0:
                segment.pop(seg[0], None)

    def release(self, owner: int, blocks: int, full: int) -> None:
        """Free a request's ``blocks``, ``full`` of them hashed (computed tokens // block size): those join the back,
        hittable under ``owner`` ≥ 0 (a preemption) or anonymous (−1, a finished request); the rest (its partial
        last block) goes to the front."""
        self.free += blocks
        if not self.caching or blocks <= 0:
            return
        self.prepend_unhashed(blocks - full)
        if full <= 0:
            return
        if owner >= 0:
            seg = [owner, full]
            self.segment[owner] = seg
            self.fifo.append(seg)
        elif self.fifo and self.fifo[-1][0] < 0:
            self.fifo[-1][1] += full  # anonymous blocks next to anonymous ones: one segment
        else:
            self.fifo.append([-1, full])

    def prepend_unhashed(self, blocks: int) -> None:
        """Put blocks without a hash at the front of the queue (after the pending evictions, which came first)."""
        if blocks <= 0:
            return
        self.flush()
        fifo = self.fifo
        if fifo and fifo[0][0] < 0:
            fifo[0][1] += blocks
        else:
            fifo.appendleft([-1, blocks])

    def cached(self, owner: int) -> int:
        """Blocks of a preempted request's prefix still in the queue."""
        if owner not in self.segment:
            return 0
        if self.pending:
            self.flush()
        seg = self.segment.get(owner)
        return seg[1] if seg is not None else 0

    def reclaim(self, owner: int, blocks: int) -> None:
        """A prefix-cache hit: take ``blocks`` of the owner's cached blocks back out of the free queue."""
        if self.pending:
            self.flush()
        seg = self.segment.pop(owner, None)
        if seg is None:
            return
        self.free -= blocks
        seg[1] -= blocks
        seg[0] = -1  # any uncovered rest stays free, anonymous


def full_sequence_fits(num_tokens: int, block_size: int, num_free_blocks: int) -> bool:
    """vLLM's admission gate (``scheduler_reserve_full_isl``, on by default in vllm 0.32): a waiting or preempted
    request is admitted only if blocks for ALL its tokens are free, not just for its first chunk (its prefix-cache
    hit blocks sit in the free queue, so they count as free and as needed alike). Without it, chunked prefill
    over-admits long prompts and preempts them again: with 500–1,000-token prompts under a 256–512-token budget, a
    user saw vLLM run 2 requests and never preempt where a first-chunk gate ran 3 and preempted 7–11 times. The gate
    implies the first chunk fits too. ``engine.window_kernel`` applies the same test inline (numba)."""
    return -(-num_tokens // block_size) <= num_free_blocks


@dataclass
class _Window:
    """A planned run of steps in which every running request decodes but for the tail, which may be prefilling in
    chunks, with the preemptions, completions and admissions that vLLM would make inside it; positions ≥
    len(running) are requests admitted in the window. Per position: ``kind`` 0 runs on, 1 preempted, 2 finished at
    ``at``; a kept position has computed ``cadj + steps`` and generated ``gadj + steps`` tokens at the window's end."""

    active: np.ndarray  # decoding requests in each step
    ctx0: np.ndarray  # Σ (computed tokens − step) over them: step j reads ctx0 + (j − 1)·active cached tokens
    pre_tokens: np.ndarray  # prefill tokens in each step (the prefilling tail's chunk and admissions)
    pre_pairs: np.ndarray
    pre_kv: np.ndarray
    pre_seqs: np.ndarray
    sampled: np.ndarray  # first tokens sampled at the end of a prefill in each step
    prompt: np.ndarray  # prompt tokens counted in each step (pre_tokens but for a lone last prompt token)
    rid: IntSeq
    cadj: IntSeq
    gadj: IntSeq
    kind: IntSeq
    at: IntSeq
    adm_step: IntSeq  # step of admission of each position ≥ the running count given
    partial: IntSeq  # positions admitted with a partial chunk (their first token is in ``prefilled``)
    prefilled: IntSeq  # request, step of other completed prefills (flat pairs): the prefilling tail's
    front: IntSeq  # requests preempted in the window, still waiting (head last)
    wait_used: int  # requests taken from the waiting queue given
    events: IntSeq  # step, running, waiting, preempted so far, free blocks of each trace point (flat)


def _window_kernel(arrivals_pending: bool) -> Any:
    """The compiled window loop where it is used: per WINDOW_LOOP, once this process has it (see engine.window_jit),
    for windows with no arrival pending (a run without arrivals is one window; with arrivals, the thousands of short
    windows before the last arrival stay in Python, where converting the free queue would cost more than it saves)."""
    if WINDOW_LOOP == "python":
        return None
    if WINDOW_LOOP == "compiled":
        k = window_jit.kernel() or window_jit.load()
        if k is None:
            raise SimulationError(f"WINDOW_LOOP is 'compiled' but numba is unavailable: {window_jit.load_error}")
        return k
    return None if arrivals_pending else window_jit.kernel()


def _decode_window(
    pool: _FreePool,
    r_id: np.ndarray,
    r_comp: np.ndarray,
    r_gen: np.ndarray,
    r_osl: np.ndarray,
    wait: np.ndarray,
    isl: list[int],
    osl: list[int],
    gen_g: np.ndarray,
    bs: int,
    budget: int,
    max_num_seqs: int,
    arrivals_pending: bool,
    max_steps: int,
) -> _Window | None:
    """Plan steps in which the running requests decode (the tail may be prefilling), jumping from event to event,
    and apply their block allocations and frees to ``pool`` in order.

    A decoding request with c computed tokens needs a new block in the step that computes token c + 1 when
    c mod bs = 0, so in window step j those with (1 − cadj) mod bs = j mod bs cross (``cross``); over any bs
    consecutive steps each of the A decoders crosses once, so needs grow by A per block cycle and the first step
    whose needs exceed the free blocks is found by skipping whole cycles and walking at most two.
    Events: a step whose needs exceed the free blocks pops the tail (most recently admitted first) until they fit;
    a request's last token frees its blocks after its step; in a step without preemption, waiting requests are
    admitted while the budget, max_num_seqs and free blocks allow. A request whose (re)prefill does not fit the
    step's leftover budget stays at the tail as the prefilling request: while it prefills, every step is taken one
    at a time (its chunk and blocks change each step). The window ends when nobody runs, after ``max_steps``, or
    (with arrivals pending) after its first event; with arrivals pending it holds no prefilling request. Returns
    None when the very first step needs the general scheduler.

    This loop runs once per scheduler event (tens of thousands in a cliff run), so it keeps everything in local
    Python ints and lists (a NumPy scalar read costs several times a list read) and does the pool's bookkeeping
    inline: ``free`` and the pending evictions are locals, written back at the end.
    """
    heappush, heappop = heapq.heappush, heapq.heappop
    rid = r_id.tolist()
    cadj = r_comp.tolist()
    gadj = r_gen.tolist()
    waiting = wait.tolist()
    m = len(rid)
    kind = [0] * m
    at = [0] * m
    # The prefilling tail (position p_pos, −1 when none): computed tokens, tokens to reach, blocks held, generated.
    p_pos = -1
    p_rid = p_comp = p_ntok = p_held = p_gen = 0
    if m and isl[rid[-1]] + gadj[-1] - cadj[-1] > 1:
        p_pos = m - 1
        p_rid, p_comp, p_gen = rid[-1], cadj[-1], gadj[-1]
        p_ntok = isl[p_rid] + p_gen
        p_held = -(-p_comp // bs)
    alive = m if p_pos < 0 else m - 1  # decoding requests
    # Per-window set-up in whole-array steps: with arrivals a run has thousands of short windows.
    cross = np.bincount((1 - r_comp[:alive]) % bs, minlength=bs).tolist()
    last_step = (r_osl[:alive] - r_gen[:alive]).tolist()
    heap = list(zip(last_step, range(alive), strict=True))  # (step of the last token, position)
    first_decoders = np.flatnonzero(r_gen[:alive] == 0).tolist()
    heapq.heapify(heap)
    sum_c = sum(cadj[:alive])
    # Positions not yet passed by tail preemption, in order; it pops the last (a dead one is skipped): above the last
    # one popped every position is preempted or finished until admissions append more, so this visits what walking
    # down from the tail would, without passing the same dead positions again and again.
    live = list(range(m))
    live_pop, live_append = live.pop, live.append
    jcur = 0
    # Records kept as flat lists (one extend per record; NumPy converts flat lists of numbers far faster than lists
    # of tuples): runs of steps (decoders, Σ cadj, steps), prefill work per step (step, tokens, pairs, kv, seqs,
    # sampled, prompt), trace points, admissions and completed prefills (request, step).
    segs: list[int] = []
    extra: list[float] = []
    events: list[int] = []
    adm_step: list[int] = []
    partial_pos: list[int] = []
    prefilled: list[int] = []
    seg_add, extra_add, event_add = segs.extend, extra.extend, events.extend
    rid_append, kind_append, at_append, cadj_append, gadj_append = (
        rid.append,
        kind.append,
        at.append,
        cadj.append,
        gadj.append,
    )
    adm_step_append = adm_step.append
    front: list[int] = []
    wptr = 0
    n_wait0 = len(waiting)
    preempted = 0
    # The pool, inline: free blocks, allocations not yet evicted from the queue, the queue and its owned segments.
    free = pool.free
    caching = pool.caching
    fifo = pool.fifo
    fifo_append = fifo.append
    segment = pool.segment
    pool.flush()
    pend = 0  # blocks allocated here and not yet evicted from the queue (see _FreePool)
    gen_w: dict[int, int] = {}  # generated tokens of the requests preempted here (into gen_g at the end)
    head_need = -1  # blocks the head of the waiting queue needs for all its tokens (−1: not known yet)
    stop_after_event = False  # with arrivals pending: the window ends after its first event

    while jcur < max_steps:
        if stop_after_event:
            break
        j = jcur + 1
        left = 0  # budget left for admissions in step j (0: none)
        done_now = 0  # blocks of requests finished by the token their prefill ends with
        done_partial = 0  # of which partial last blocks (no hash: they go to the queue's front)
        x_on = False  # prefill work in step j: tokens, pairs, kv, sequences, first tokens, prompt tokens
        had_prefill = p_pos >= 0
        tail_need = -1  # ≥ 0: step j preempts from the tail until its decodes' blocks fit (after the branches)
        if had_prefill:
            # ---- a step with the prefilling tail: its chunk takes the budget the decodes leave.
            need_d = cross[j % bs]
            chunk = p_ntok - p_comp
            if chunk > budget - alive:
                chunk = budget - alive
            need_p = -(-(p_comp + chunk) // bs) - p_held
            if need_d + need_p <= free:
                seg_add((alive, sum_c, 1))
                free -= need_d + need_p
                pend += need_d + need_p
                running_now = alive + 1
                if chunk == 1 == p_ntok - p_comp:
                    # One token left: the reference cannot tell it from a decode and prices it as one.
                    x_on, x_tok, x_pairs, x_kv, x_seqs, x_samp, x_prompt = True, 1, p_comp + 1, p_comp, 1, 0, 0
                else:
                    x_on, x_tok, x_pairs, x_kv = True, chunk, chunk * (p_comp + chunk / 2), p_comp
                    x_seqs, x_samp, x_prompt = 1, 0, chunk
                p_comp += chunk
                p_held += need_p
                left = budget - alive - chunk
                if p_comp == p_ntok:  # its prefill ends: the last position samples a token
                    x_samp = 1
                    prefilled += (p_rid, j)
                    g_after = p_gen + 1
                    cadj[p_pos] = p_ntok - j
                    gadj[p_pos] = g_after - j
                    if g_after >= osl[p_rid]:
                        kind[p_pos] = 2
                        at[p_pos] = j
                        done_now = p_held
                        done_partial = p_held - p_ntok // bs
                    else:
                        cross[(1 - p_ntok + j) % bs] += 1
                        alive += 1
                        sum_c += p_ntok - j
                        heappush(heap, (j + osl[p_rid] - g_after, p_pos))
                    p_pos = -1
            else:
                # Preemption pops the tail first: the prefilling request, then decoders until the decodes fit.
                free += p_held
                if caching:  # its full blocks stay hittable at the back, a partial last block goes to the front
                    full = p_comp // bs
                    if p_held > full:
                        pool.pending = pend
                        pool.prepend_unhashed(p_held - full)
                        pend = 0
                    if full:
                        s = [p_rid, full]
                        fifo_append(s)
                        segment[p_rid] = s
                kind[p_pos] = 1
                at[p_pos] = j
                gen_w[p_rid] = p_gen
                front.append(p_rid)
                head_need = -(-p_ntok // bs)
                preempted += 1
                p_pos = -1
                tail_need = need_d
        else:
            # ---- decodes only. Admissions in step j (only if its decodes fit without preemption): the head needs
            # blocks for its whole sequence free (full_sequence_fits, whatever its prefix-cache hit); when they are
            # not, nothing can be admitted before the next event (free blocks only shrink).
            need1 = cross[j % bs]
            admit = False
            if need1 <= free and alive < max_num_seqs and budget > alive and (front or wptr < n_wait0):
                if head_need < 0:
                    r = front[-1] if front else waiting[wptr]
                    g = gen_w.get(r)
                    head_need = -(-(isl[r] + (int(gen_g[r]) if g is None else g)) // bs)
                admit = free - need1 >= head_need
            if admit:
                if arrivals_pending:
                    break  # a possible admission before the next arrival: the general scheduler takes the step
                seg_add((alive, sum_c, 1))
                free -= need1  # the step runs: its decodes allocate first, then admission (exact hits)
                pend += need1
                running_now = alive
                left = budget - alive
            else:
                if alive == 0:
                    break
                # ---- jump to the next event: a completion, or the first step whose needs exceed the free blocks.
                while kind[heap[0][1]]:
                    heappop(heap)
                j_fin = heap[0][0]
                horizon = j_fin if j_fin < max_steps else max_steps
                jj = jcur
                acc = 0
                if horizon - jcur > 2 * bs and free >= 2 * alive:  # skip whole block cycles that surely fit
                    cycles = min(free // alive - 1, (horizon - jcur) // bs - 1)
                    jj += cycles * bs
                    acc = cycles * alive
                while jj < horizon:
                    nxt = acc + cross[(jj + 1) % bs]
                    if nxt > free:
                        break
                    acc = nxt
                    jj += 1
                if jj > jcur:
                    seg_add((alive, sum_c, jj - jcur))
                    free -= acc
                    pend += acc
                    if jj - jcur > 1:  # a trace point at the end of a long run, before the event that ends it
                        event_add((jj, alive, len(front) + n_wait0 - wptr, preempted, free))
                    jcur = jj
                stop_after_event = arrivals_pending
                if jj == horizon:
                    if horizon < j_fin:
                        break
                    j = jj  # no preemption before the next completion: it frees its blocks after the step
                else:
                    # Step jj + 1 needs more blocks than are free: the tail is preempted below until it fits.
                    j = jj + 1
                    tail_need = cross[j % bs]
        if tail_need >= 0:
            # ---- step j's decodes need tail_need blocks: preempt decoders from the tail (most recently admitted
            # first) until they fit; a preempted one no longer needs its block this step. Then the step runs.
            while tail_need > free and live:
                i = live_pop()
                if kind[i]:
                    continue
                ci = cadj[i]
                r = rid[i]
                h = -(-(ci + jcur) // bs)
                free += h
                if caching:  # as the prefilling tail's above: full blocks to the back, a partial one to the front
                    full = (ci + jcur) // bs
                    if h > full:
                        pool.pending = pend
                        pool.prepend_unhashed(h - full)
                        pend = 0
                    if full:
                        s = [r, full]
                        fifo_append(s)
                        segment[r] = s
                ph = (1 - ci) % bs
                if ph == j % bs:
                    tail_need -= 1
                cross[ph] -= 1
                alive -= 1
                sum_c -= ci
                kind[i] = 1
                at[i] = j
                gen_w[r] = gadj[i] + jcur
                front.append(r)
                head_need = -(-(ci + jcur + 1) // bs)  # it had computed all but its last sampled token
                preempted += 1
            seg_add((alive, sum_c, 1))
            free -= tail_need
            pend += tail_need
        # ---- admissions from the head of the waiting queue (preempted requests first, most recent first).
        partial = False
        if left > 0:
            if not x_on:
                x_on, x_tok, x_pairs, x_kv, x_seqs, x_samp, x_prompt = True, 0, 0.0, 0, 0, 0, 0
            n_adm = 0
            while (front or wptr < n_wait0) and left > 0 and running_now + n_adm < max_num_seqs:
                r = front[-1] if front else waiting[wptr]
                g = gen_w.get(r)
                if g is None:
                    g = int(gen_g[r])
                ntok = isl[r] + g
                hit = 0
                s = segment.get(r)
                if s is not None:
                    if pend:  # the hit depends on what the allocations so far have evicted
                        pool.pending = pend
                        pool.flush()
                        pend = 0
                        s = segment.get(r)
                    if s is not None:
                        hit = min(s[1], (ntok - 1) // bs)
                hit_tokens = hit * bs
                chunk = ntok - hit_tokens
                if chunk > left:
                    chunk = left
                if not full_sequence_fits(ntok, bs, free):
                    break
                total = -(-(hit_tokens + chunk) // bs)
                if front:
                    front.pop()
                else:
                    wptr += 1
                head_need = -1
                if s is not None:  # the hit's blocks leave the queue; any uncovered rest stays free, anonymous
                    del segment[r]
                    free -= hit
                    s[1] -= hit
                    s[0] = -1
                free -= total - hit
                pend += total - hit
                x_tok += chunk
                x_pairs += chunk * (hit_tokens + chunk / 2)
                x_kv += hit_tokens
                x_seqs += 1
                x_prompt += chunk
                left -= chunk
                n_adm += 1
                pos = len(rid)
                live_append(pos)
                rid_append(r)
                kind_append(0)
                at_append(0)
                adm_step_append(j)
                if chunk < ntok - hit_tokens:
                    # A partial chunk: the request goes on prefilling at the tail in the next steps.
                    p_pos, p_rid, p_comp, p_ntok, p_held, p_gen = pos, r, hit_tokens + chunk, ntok, total, g
                    cadj_append(0)
                    gadj_append(0)
                    partial_pos.append(pos)
                    partial = True
                    break
                x_samp += 1
                g += 1  # the prefill's last position samples a token
                cadj_append(ntok - j)
                gadj_append(g - j)
                if g >= osl[r]:  # done with this token: its blocks return after the step
                    kind[pos] = 2
                    at[pos] = j
                    done_now += total
                    done_partial += total - ntok // bs
                    continue
                cross[(1 - ntok + j) % bs] += 1
                alive += 1
                sum_c += ntok - j
                heappush(heap, (j + osl[r] - g, pos))
        if x_on:
            extra_add((j, x_tok, x_pairs, x_kv, x_seqs, x_samp, x_prompt))
        # Requests whose last token came in step j free their blocks after it (anonymous: nobody can hit them).
        freed = done_now
        freed_partial = done_partial
        while heap and heap[0][0] <= j:
            i = heappop(heap)[1]
            if kind[i]:
                continue
            kind[i] = 2
            at[i] = j
            ci = cadj[i]
            cross[(1 - ci) % bs] -= 1
            alive -= 1
            sum_c -= ci
            freed += -(-(ci + j) // bs)
            freed_partial += 1 if (ci + j) % bs else 0
        if freed:
            free += freed
            if caching:  # all anonymous: full blocks to the back, partial last blocks to the front
                if freed_partial:
                    pool.pending = pend
                    pool.prepend_unhashed(freed_partial)
                    pend = 0
                freed -= freed_partial
                if freed:
                    if fifo and fifo[-1][0] < 0:
                        fifo[-1][1] += freed
                    else:
                        fifo_append([-1, freed])
        jcur = j
        point = (j, alive + (1 if p_pos >= 0 else 0), len(front) + n_wait0 - wptr, preempted, free)
        event_add(point)
        if partial and not had_prefill:
            event_add(point)  # the reference closes its decode run here and records the step once more
        if not (alive or p_pos >= 0 or front or wptr < n_wait0):
            break
    pool.pending = pend
    pool.free = free
    for r, g in gen_w.items():
        gen_g[r] = g
    if jcur == 0:
        return None
    return _window_from_records(
        jcur, segs, extra, p_pos, p_comp, p_gen, first_decoders, prefilled,
        rid, cadj, gadj, kind, at, adm_step, partial_pos, front, wptr, events,
    )  # fmt: skip


def _window_from_records(
    n_steps: int,
    segs: list[int] | np.ndarray,
    extra: list[float] | np.ndarray,
    p_pos: int,
    p_comp: int,
    p_gen: int,
    first_decoders: list[int],
    prefilled: list[int] | np.ndarray,
    rid: list[int] | np.ndarray,
    cadj: list[int] | np.ndarray,
    gadj: list[int] | np.ndarray,
    kind: list[int] | np.ndarray,
    at: list[int] | np.ndarray,
    adm_step: list[int] | np.ndarray,
    partial_pos: list[int] | np.ndarray,
    front: list[int] | np.ndarray,
    wptr: int,
    events: list[int] | np.ndarray,
) -> _Window:
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
    if p_pos >= 0:
        cadj[p_pos] = p_comp - n_steps
        gadj[p_pos] = p_gen - n_steps
    # A running request that has generated nothing yet (its last prompt token left for a step of its own, which the
    # reference takes as a decode) samples its first token in step 1 unless preempted there.
    if first_decoders:
        firsts = [x for i in first_decoders if kind[i] != 1 or at[i] > 1 for x in (int(rid[i]), 1)]
        prefilled = np.concatenate([np.asarray(firsts, dtype=np.int64), np.asarray(prefilled, dtype=np.int64)])
    return _Window(
        active,
        ctx0,
        pre[0],
        pre[1],
        pre[2],
        pre[3],
        pre[4],
        pre[5],
        rid,
        cadj,
        gadj,
        kind,
        at,
        adm_step,
        partial_pos,
        prefilled,
        front,
        wptr,
        events,
    )


def _decode_window_compiled(
    kernel: Any,
    pool: _FreePool,
    r_id: np.ndarray,
    r_comp: np.ndarray,
    r_gen: np.ndarray,
    wait: np.ndarray,
    isl: np.ndarray,
    osl: np.ndarray,
    gen_g: np.ndarray,
    bs: int,
    budget: int,
    max_num_seqs: int,
    arrivals_pending: bool,
    max_steps: int,
) -> _Window | None:
    """``_decode_window`` with its event loop in compiled code (``engine.window_kernel``): the same window.

    The free queue goes in as arrays and comes back as the pool's deque and owner map; that costs a pass over the
    queue, so this pays for long windows (a run without arrivals is one) rather than thousands of short ones."""
    pool.flush()
    fifo = pool.fifo
    fifo_o = np.fromiter((s[0] for s in fifo), dtype=np.int64, count=len(fifo))
    fifo_b = np.fromiter((s[1] for s in fifo), dtype=np.int64, count=len(fifo))
    seg_of = np.full(len(gen_g), -1, dtype=np.int64)
    owned = np.flatnonzero(fifo_o >= 0)
    seg_of[fifo_o[owned]] = owned
    alive = len(r_id) - (1 if len(r_id) and isl[r_id[-1]] + r_gen[-1] - r_comp[-1] > 1 else 0)
    first_decoders = np.flatnonzero(r_gen[:alive] == 0).tolist()
    (
        jcur, free, pend, fifo_o, fifo_b, rid, cadj, gadj, kind, at, adm_step, partial_pos, prefilled, front, wptr,
        events, segs, extra, p_pos, p_comp, p_gen,
    ) = kernel(
        int(pool.free), pool.caching, fifo_o, fifo_b, 0, len(fifo_o), seg_of,
        np.ascontiguousarray(r_id, dtype=np.int64), np.ascontiguousarray(r_comp, dtype=np.int64),
        np.ascontiguousarray(r_gen, dtype=np.int64), np.ascontiguousarray(wait, dtype=np.int64),
        isl, osl, gen_g, bs, budget, max_num_seqs, arrivals_pending, max_steps,
    )  # fmt: skip
    pool.free = int(free)
    pool.pending = int(pend)
    segments = [[o, b] for o, b in zip(fifo_o.tolist(), fifo_b.tolist(), strict=True)]
    pool.fifo = deque(segments)
    pool.segment = {seg[0]: seg for seg in segments if seg[0] >= 0}
    if jcur == 0:
        return None
    return _window_from_records(
        int(jcur), segs, extra, int(p_pos), int(p_comp), int(p_gen), first_decoders, prefilled,
        rid, cadj, gadj, kind, at, adm_step, partial_pos, front, int(wptr), events,
    )  # fmt: skip


def _trace_events(
    trace: _Trace,
    events: list[int],
    pool_blocks: int,
    preempt_total: int,
    tcum: np.ndarray,
    pcum: np.ndarray,
    gcum: np.ndarray,
    bcum: np.ndarray,
    fcum: np.ndarray,
) -> None:
    """Append a window's event records to the trace in whole-array steps (tens of thousands of events per run
    make a per-event Python loop over NumPy scalars a large share of the run time)."""
    if not len(events):
        return
    ev = np.array(events, dtype=np.int64).reshape(-1, 5)
    idx = ev[:, 0] - 1
    trace.block(
        tcum[idx],
        ev[:, 1],
        ev[:, 2],
        pool_blocks - ev[:, 4],
        pcum[idx],
        gcum[idx],
        preempt_total + ev[:, 3],
        bcum[idx],
        fcum[idx],
    )


def _first_times(
    w: _Window, m: int, t_start: np.ndarray, tcum: np.ndarray, first_sched: np.ndarray, first_tok: np.ndarray
) -> None:
    """Set first-scheduled and first-token times of the window's admissions, never overwriting earlier ones (a
    request can be admitted many times in a cliff run; its first admission in the window is the one that counts).
    ``m``: the running requests the window started with (positions before the admitted ones)."""
    if not len(w.adm_step) and not len(w.prefilled):
        return
    rs = np.array(w.rid[m:], dtype=np.int64)
    steps = np.array(w.adm_step, dtype=np.int64)
    done = np.ones(len(rs), dtype=bool)  # prefill completed in the admission step
    done[np.array(w.partial, dtype=np.int64) - m] = False
    extra = np.array(w.prefilled, dtype=np.int64).reshape(-1, 2)
    tok_r = np.concatenate([extra[:, 0], rs[done]])
    tok_steps = np.concatenate([extra[:, 1], steps[done]])
    order = np.argsort(tok_steps, kind="stable")  # chronological: the first of each request is its first token
    for r_arr, s_arr, times, out in (
        (rs, steps, t_start, first_sched),
        (tok_r[order], tok_steps[order], tcum, first_tok),
    ):
        if not len(r_arr):
            continue
        uniq, first = np.unique(r_arr, return_index=True)
        first = first[np.isnan(out[uniq])]
        out[r_arr[first]] = times[s_arr[first] - 1]


def _next_arrival(arr_sorted: np.ndarray, next_arr: int) -> float:
    """The next arrival's time, to which an idle replica skips; one not yet sent by a closed-loop client would mean
    the client waits on a request the engine does not hold (a bookkeeping error, never a state to wait in)."""
    t_next = float(arr_sorted[next_arr])
    if not np.isfinite(t_next):
        raise SimulationError("internal: the engine is idle but the client's next request was never sent")
    return t_next


def _client_finished(client: ClientLoop | None, finish_s: np.ndarray) -> None:
    """Requests finished at ``finish_s``: a closed-loop client sends the next ones into their freed slots (their
    arrivals are after the step that finished them, so the driver sees them at its next arrival check)."""
    if client is not None:
        client.on_finished(finish_s)


def _simulate_replica(
    isl: np.ndarray,
    osl: np.ndarray,
    arrival: np.ndarray,
    step_model: StepModel,
    pool_blocks: int,
    block_size: int,
    max_num_seqs: int,
    budget: int,
    out: dict[str, np.ndarray],
    trace: _Trace,
    totals: _Totals,
    prefix_caching: bool = True,
    client: ClientLoop | None = None,
) -> None:
    """Run one replica's scheduler to completion, writing per-request times into ``out`` (indexed like isl).

    The running list is held as arrays in running order (ids, computed tokens, generated tokens, blocks, lengths),
    so a window of decode steps updates it with a few whole-array operations and preemption truncates its tail.
    ``client`` (a benchmark client's concurrency cap, engine.arrivals) replaces ``arrival``: it sends the next
    request when one finishes (``_client_finished``), so arrivals not yet sent read as +inf (see ``_next_arrival``).
    """
    n = len(isl)
    bs = block_size
    isl = np.ascontiguousarray(isl, dtype=np.int64)
    osl = np.ascontiguousarray(osl, dtype=np.int64)
    isl_list, osl_list = isl.tolist(), osl.tolist()
    gen_g = np.zeros(n, dtype=np.int64)  # generated tokens of requests not running (kept across preemption)
    first_sched = np.full(n, np.nan)
    first_tok = np.full(n, np.nan)
    finished = np.full(n, np.nan)
    npre = np.zeros(n, dtype=np.int64)
    order = np.argsort(arrival, kind="stable")
    arr_sorted = arrival[order]
    if client is not None:  # sent in index order, arrivals filled in as slots free: read the client's own array
        order, arr_sorted = np.arange(n), client.engine_arrival
    next_arr = 0
    empty = np.empty(0, dtype=np.int64)
    r_id = r_comp = r_gen = r_held = r_isl = r_osl = empty
    wait = empty
    pool = _FreePool(pool_blocks, prefix_caching)
    t = 0.0
    prompt_total = gen_total = bytes_total = flops_total = 0.0
    preempt_total = 0
    done = 0
    steps = 0

    def record() -> None:
        trace.row(
            t,
            len(r_id),
            len(wait),
            pool_blocks - pool.free,
            prompt_total,
            gen_total,
            preempt_total,
            bytes_total,
            flops_total,
        )

    def add_costs(cost: StepCost, k: int, dts: np.ndarray) -> None:
        def first(x: Any) -> float:
            return float(np.sum(x[:k])) if np.ndim(x) else float(x) * k

        totals.busy_s += float(dts.sum())
        totals.compute_s += first(cost.compute_s)
        totals.memory_s += first(cost.memory_s)
        totals.comm_s += first(cost.comm_s)
        totals.overhead_s += first(cost.overhead_s)
        totals.steps += k

    record()
    while done < n:
        steps += 1
        if steps > MAX_STEPS:
            raise SimulationError("simulation exceeded its step limit; reduce num_requests or output lengths")
        # Arrivals up to now join the back of the waiting queue.
        if next_arr < n and arr_sorted[next_arr] <= t:
            k = int(np.searchsorted(arr_sorted, t, side="right"))
            wait = np.concatenate([wait, order[next_arr:k]])
            next_arr = k
        m = len(r_id)
        if m == 0 and len(wait) == 0:
            t = _next_arrival(arr_sorted, next_arr)  # idle until the next arrival
            record()
            continue
        want = r_isl + r_gen - r_comp
        # ---------------------------------------------------------------- fast path: runs of decode steps
        # All running requests decode but for the tail, which may be prefilling (not with arrivals pending: the
        # arrival horizon below prices decode steps only).
        if (
            USE_DECODE_WINDOWS
            and m
            and m <= budget
            and (m == 1 or int(want[:-1].max()) == 1)
            and (want[-1] == 1 or next_arr >= n)
        ):
            max_steps = MAX_STEPS
            if next_arr < n and arr_sorted[next_arr] < np.inf:  # (+inf: sent when a request finishes)
                # Only steps that surely end before the next arrival: priced at the horizon's longest step.
                ctx = float(r_comp.sum())
                gap = float(arr_sorted[next_arr]) - t
                max_steps = int(gap / float(step_model.round_cost(m, ctx + m, ctx, m).time_s))
                if max_steps >= 1:
                    ctx_end = ctx + max_steps * m
                    max_steps = int(gap / float(step_model.round_cost(m, ctx_end + m, ctx_end, m).time_s))
            kernel = _window_kernel(next_arr < n)
            if max_steps < 1:
                window = None
            elif kernel is not None:
                window = _decode_window_compiled(
                    kernel,
                    pool,
                    r_id,
                    r_comp,
                    r_gen,
                    wait,
                    isl,
                    osl,
                    gen_g,
                    bs,
                    budget,
                    max_num_seqs,
                    arrivals_pending=next_arr < n,
                    max_steps=max_steps,
                )
            else:
                window = _decode_window(
                    pool,
                    r_id,
                    r_comp,
                    r_gen,
                    r_osl,
                    wait,
                    isl_list,
                    osl_list,
                    gen_g,
                    bs,
                    budget,
                    max_num_seqs,
                    arrivals_pending=next_arr < n,
                    max_steps=max_steps,
                )
            if window is not None:
                w = window
                jn = len(w.active)
                jidx = np.arange(1, jn + 1, dtype=np.int64)
                kv_read = w.ctx0 + (jidx - 1) * w.active
                cost = step_model.round_cost(
                    w.active + w.pre_tokens,
                    kv_read + w.active + w.pre_pairs,
                    kv_read + w.pre_kv,
                    w.active + w.pre_seqs,
                )
                dts = np.asarray(cost.time_s, dtype=float) * np.ones(jn)
                tcum = t + np.cumsum(dts)
                t_start = np.concatenate([[t], tcum[:-1]])
                gcum = gen_total + np.cumsum(w.active + w.sampled)
                pcum = prompt_total + np.cumsum(w.prompt)
                bcum = bytes_total + np.cumsum(np.asarray(cost.bytes_moved, dtype=float) * np.ones(jn))
                fcum = flops_total + np.cumsum(np.asarray(cost.flops, dtype=float) * np.ones(jn))
                _trace_events(trace, w.events, pool_blocks, preempt_total, tcum, pcum, gcum, bcum, fcum)
                add_costs(cost, jn, dts)
                t = float(tcum[-1])
                gen_total = float(gcum[-1])
                prompt_total = float(pcum[-1])
                bytes_total = float(bcum[-1])
                flops_total = float(fcum[-1])
                # Per-request outcomes.
                _first_times(w, m, t_start, tcum, first_sched, first_tok)
                kinds = np.asarray(w.kind, dtype=np.int8)
                rids = np.asarray(w.rid, dtype=np.int64)
                pre_ids = rids[kinds == 1]
                npre += np.bincount(pre_ids, minlength=n)  # a request may be preempted many times in one window
                preempt_total += len(pre_ids)
                fin_pos = np.flatnonzero(kinds == 2)
                if len(fin_pos):
                    at_f = np.asarray(w.at, dtype=np.int64)[fin_pos]
                    fin_ids = rids[fin_pos]
                    finished[fin_ids] = tcum[at_f - 1]
                    _client_finished(client, tcum[at_f - 1])
                    gen_g[fin_ids] = np.asarray(w.gadj, dtype=np.int64)[fin_pos] + at_f
                    done += len(fin_pos)
                wait = np.concatenate([np.asarray(w.front[::-1], dtype=np.int64), wait[w.wait_used :]])
                kp = np.flatnonzero(kinds == 0)
                r_id = rids[kp]
                r_comp = np.asarray(w.cadj, dtype=np.int64)[kp] + jn
                r_gen = np.asarray(w.gadj, dtype=np.int64)[kp] + jn
                r_held = -(-r_comp // bs)  # a partially prefilled request holds ceil(computed / bs) too
                r_isl = isl[r_id]
                r_osl = osl[r_id]
                record()
                continue
        # ---------------------------------------------------------------- general step
        c = r_comp
        prev = np.cumsum(want) - want
        sched = np.minimum(want, np.maximum(0, budget - prev))
        after = -(-(c + sched) // bs)
        need = np.maximum(0, after - r_held)
        need_cum = np.concatenate([[0], np.cumsum(need)])
        tail_free = np.concatenate([[0], np.cumsum(r_held[::-1])])
        p_all = np.arange(m + 1)
        fits = need_cum[m - p_all] <= pool.free + tail_free
        p = int(np.argmax(fits))
        keep_n = m - p
        if p:
            victims = r_id[keep_n:]
            for pos_ in range(m - 1, keep_n - 1, -1):  # the tail is popped first
                pool.release(int(r_id[pos_]), int(r_held[pos_]), int(c[pos_]) // bs)
            gen_g[victims] = r_gen[keep_n:]
            npre[victims] += 1
            preempt_total += p
            wait = np.concatenate([victims, wait])
            r_id, r_gen, r_isl, r_osl = r_id[:keep_n], r_gen[:keep_n], r_isl[:keep_n], r_osl[:keep_n]
        kept_sched = sched[:keep_n]
        pool.alloc(int(need[:keep_n].sum()))
        r_held = after[:keep_n]
        c_k = c[:keep_n]
        r_comp = c_k + kept_sched
        used_budget = int(kept_sched.sum())
        # Admission of waiting requests: only without preemption in this step.
        n_adm = 0
        adm_sched = empty
        adm_hit = empty
        left = budget - used_budget
        if p == 0 and len(wait) and left > 0 and len(r_id) < max_num_seqs:
            cap = min(len(wait), max_num_seqs - len(r_id), left)
            head_ids = wait[:cap]
            if prefix_caching and pool.segment and any(r in pool.segment for r in head_ids.tolist()):
                # One by one, as vLLM does: each hit is looked up after the previous admissions' evictions.
                picked: list[tuple[int, int, int, int]] = []  # (request, hit tokens, chunk, blocks)
                room = left
                for r in head_ids.tolist():
                    ntok = int(isl[r] + gen_g[r])
                    hit_b = min(pool.cached(r), (ntok - 1) // bs)
                    chunk = min(ntok - hit_b * bs, room)
                    if chunk <= 0 or not full_sequence_fits(ntok, bs, pool.free):
                        break
                    total = -(-(hit_b * bs + chunk) // bs)
                    pool.reclaim(r, hit_b)
                    pool.alloc(total - hit_b)
                    picked.append((r, hit_b * bs, chunk, total))
                    room -= chunk
                n_adm = len(picked)
                if n_adm:
                    cols = np.asarray(picked, dtype=np.int64)
                    admitted, adm_hit, adm_sched, adm_blocks = cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3]
            else:
                w = isl[head_ids] + gen_g[head_ids]
                prev_w = np.cumsum(w) - w
                s = np.minimum(w, np.maximum(0, left - prev_w))
                nb = -(-s // bs)
                # full_sequence_fits for each in turn: its whole sequence in what the earlier chunks leave free
                ok = (s > 0) & (np.cumsum(nb) - nb + -(-w // bs) <= pool.free)
                n_adm = int(np.argmin(ok)) if not ok.all() else len(ok)
                if n_adm:
                    admitted = head_ids[:n_adm]
                    adm_sched = s[:n_adm]
                    adm_hit = np.zeros(n_adm, dtype=np.int64)
                    adm_blocks = nb[:n_adm]
                    pool.alloc(int(adm_blocks.sum()))
            if n_adm:
                wait = wait[n_adm:]
                first_sched[admitted] = np.where(np.isnan(first_sched[admitted]), t, first_sched[admitted])
                r_id = np.concatenate([r_id, admitted])
                r_comp = np.concatenate([r_comp, adm_hit + adm_sched])
                r_gen = np.concatenate([r_gen, gen_g[admitted]])
                r_held = np.concatenate([r_held, adm_blocks])
                r_isl = np.concatenate([r_isl, isl[admitted]])
                r_osl = np.concatenate([r_osl, osl[admitted]])
        # Price the batch.
        dec_mask = want[:keep_n] == 1
        n_dec = int(dec_mask.sum())
        dec_ctx = float(c_k[dec_mask].sum())
        pre_mask = ~dec_mask
        pre_c = c_k[pre_mask].astype(float)
        pre_s = kept_sched[pre_mask].astype(float)
        pre_tokens = float(pre_s.sum() + adm_sched.sum())
        pairs = dec_ctx + n_dec + float(np.sum(pre_s * (pre_c + pre_s / 2)))
        pairs += float(np.sum(adm_sched * (adm_hit + adm_sched / 2)))
        tokens = n_dec + pre_tokens
        seqs = int((kept_sched > 0).sum()) + n_adm
        if tokens == 0:
            # Nothing schedulable (pool too small for the head request): skip to the next arrival or give up.
            if next_arr < n:
                t = max(t, _next_arrival(arr_sorted, next_arr))
                record()
                continue
            raise SimulationError(
                "no request can be scheduled: the KV pool is too small for the next request's first chunk"
            )
        cost = step_model.round_cost(tokens, pairs, dec_ctx + float(pre_c.sum()) + float(adm_hit.sum()), seqs)
        dt = float(cost.time_s)
        t += dt
        prompt_total += pre_tokens
        bytes_total += float(cost.bytes_moved)
        flops_total += float(cost.flops)
        add_costs(cost, 1, np.array([dt]))
        # Token emission and completion.
        emit = r_comp == r_isl + r_gen
        if emit.any():
            r_gen = r_gen + emit
            gen_total += int(emit.sum())
            e = r_id[emit]
            firsts = e[np.isnan(first_tok[e])]
            first_tok[firsts] = t
            fin_mask = emit & (r_gen >= r_osl)
            if fin_mask.any():
                fin = r_id[fin_mask]
                finished[fin] = t
                _client_finished(client, np.full(len(fin), t))
                gen_g[fin] = r_gen[fin_mask]
                pool.release(-1, int(r_held[fin_mask].sum()), int((r_comp[fin_mask] // bs).sum()))
                done += len(fin)
                keep = ~fin_mask
                r_id, r_comp, r_gen = r_id[keep], r_comp[keep], r_gen[keep]
                r_held, r_isl, r_osl = r_held[keep], r_isl[keep], r_osl[keep]
        record()
    if pool.free != pool_blocks:  # every block must be back in the pool once all requests finished
        raise SimulationError(f"internal block accounting: {pool.free} of {pool_blocks} blocks free at the end")
    out["first_scheduled_s"] = first_sched
    out["first_token_s"] = first_tok
    out["finished_s"] = finished
    out["num_preemptions"] = npre
    out["generated_tokens"] = gen_g


@lru_cache(maxsize=64)
def _step_model(
    model: str,
    gpu: str,
    gpu_mem_gib: float | None,
    tp: int,
    pp: int,
    dtype: str,
    quant: str,
    kv_dtype: str,
    calibration: Calibration,
    max_num_batched_tokens: int,
) -> StepModel:
    device = resolve_device(gpu, gpu_mem_gib)
    return StepModel(load_model(model), device, tp, pp, dtype, quant, kv_dtype, calibration, max_num_batched_tokens)


@lru_cache(maxsize=256)
def _memory(s: Scenario) -> MemoryPlan:
    return memory_plan_for(s)


def _percentile(x: np.ndarray, q: float) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if len(x) else None


def _mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None


def _bound_regime(preemptions: int, totals: _Totals) -> str:
    if preemptions > 0:
        return "capacity-bound"
    busy = max(totals.busy_s, 1e-12)
    if totals.comm_s / busy > 0.25:
        return "communication-bound"
    if totals.compute_s > totals.memory_s:
        return "compute-bound"
    return "bandwidth-bound"


def predict(
    scenario: Scenario,
    requests: np.ndarray | None = None,
    calibration: object | None = None,
    prefix_caching: bool = True,
    step_model: StepModel | None = None,
    arrivals_s: np.ndarray | None = None,
    frontend: FrontendCost | None = None,
) -> Prediction:
    """Simulate a scenario: timeline, per-request records and a summary comparable field by field with a run.

    ``prefix_caching`` (vLLM v1's default) lets a re-admitted request reuse its blocks not yet evicted.
    ``step_model`` prices the steps instead of the scenario's own (engine.fidelity records step inputs this way).
    ``arrivals_s`` gives each request's arrival time (a measured run's own), overriding ``arrival_rate``.
    A scenario with the bench client's ``request_rate``/``burstiness``/``max_concurrency`` is driven as
    ``vllm bench serve`` drives a server (engine.arrivals), through ``frontend`` (the API server's cost; None: none).
    Predictions of a workload profile with the scenario's own step model are cached (the dashboard asks for the
    same scenario on every rerun).
    """
    cal = Calibration.from_object(calibration)
    if (
        requests is None
        and step_model is None
        and arrivals_s is None
        and parse_workload(scenario.workload).kind != "file"
    ):
        pred = _predict_cached(scenario, cal, prefix_caching, frontend)
        return replace(pred, summary=dict(pred.summary))
    return _predict(scenario, requests, cal, prefix_caching, step_model, arrivals_s, frontend)


@lru_cache(maxsize=32)
def _predict_cached(
    scenario: Scenario, cal: Calibration, prefix_caching: bool, frontend: FrontendCost | None = None
) -> Prediction:
    return _predict(scenario, None, cal, prefix_caching, None, None, frontend)


def _bench_client(scenario: Scenario) -> ArrivalProcess | None:
    """The scenario's `vllm bench serve` client, or None when it has none (a batch, or evenly spaced arrivals)."""
    if scenario.request_rate is None and scenario.max_concurrency is None and scenario.burstiness == 1.0:
        return None
    rate = scenario.request_rate if scenario.request_rate is not None else float("inf")
    return ArrivalProcess(rate, scenario.burstiness, scenario.max_concurrency)


def _client_loops(client: ArrivalProcess, sent: np.ndarray, dp: int, frontend: FrontendCost) -> list[ClientLoop | None]:
    """One closed loop per DP replica (None for an open loop). The client's C slots are split over the replicas
    the round-robin router feeds, C // dp each and one more for the first C mod dp: with symmetric replicas each
    holds about C / dp in flight. The one API server's intake is shared, so each replica sees it dp times slower."""
    if client.max_concurrency is None:
        return [None] * dp
    c = client.max_concurrency
    shared = replace(frontend, request_s=frontend.request_s * dp)
    return [ClientLoop(sent[r::dp], c // dp + (1 if r < c % dp else 0), shared) for r in range(dp)]


def _predict(
    scenario: Scenario,
    requests: np.ndarray | None,
    cal: Calibration,
    prefix_caching: bool,
    step_model: StepModel | None,
    arrivals_s: np.ndarray | None = None,
    frontend: FrontendCost | None = None,
) -> Prediction:
    plan = _memory(scenario)
    if not plan.feasible:
        raise SimulationError(f"layout dp={scenario.dp} tp={scenario.tp} pp={scenario.pp} is infeasible: {plan.reason}")
    if requests is None:
        lengths = request_lengths(scenario.workload, scenario.num_requests, scenario.seed)
    else:
        lengths = np.asarray(requests, dtype=np.int64)
        if lengths.ndim != 2 or lengths.shape[1] != 2 or len(lengths) == 0 or (lengths < 1).any():
            raise SimulationError("requests must be a non-empty (n, 2) array of positive (isl, osl)")
    n = len(lengths)
    isl = lengths[:, 0].copy()
    osl = lengths[:, 1].copy()
    rate = scenario.arrival_rate
    arrival = np.arange(n, dtype=float) / rate if rate else np.zeros(n)
    client = _bench_client(scenario) if arrivals_s is None else None
    if client is None and frontend is not None and arrivals_s is None and not rate:
        client = ArrivalProcess()  # served with the bench's defaults: every request sent at t = 0, no cap
    frontend = frontend or FrontendCost()
    sent = None
    loops: list[ClientLoop | None] = [None] * scenario.dp
    if client is not None:
        sent = client.send_times(n, scenario.seed)
        arrival = frontend_intake(sent, frontend.request_s)
        loops = _client_loops(client, sent, scenario.dp, frontend)
    if arrivals_s is not None:
        arrival = np.asarray(arrivals_s, dtype=float)
        if arrival.shape != (n,) or not np.isfinite(arrival).all() or (arrival < 0).any():
            raise SimulationError(f"arrivals_s must hold {n} finite times >= 0, one per request")
    model = load_model(scenario.model)
    max_len = plan.max_model_len
    too_long = np.flatnonzero(isl + osl > max_len)
    if len(too_long):
        i = int(too_long[0])
        raise SimulationError(
            f"request {i} needs {isl[i] + osl[i]} tokens but max_model_len is {max_len}; raise max_model_len"
        )
    pool = plan.usable_kv_blocks
    longest_blocks = int(-(-(isl + osl - 1).max() // plan.block_size))
    if longest_blocks > pool:
        raise SimulationError(
            f"the longest request needs {longest_blocks} KV blocks but a replica holds {pool}: it could never finish"
        )
    sm = step_model or _step_model(
        scenario.model,
        scenario.gpu,
        scenario.gpu_mem_gib,
        scenario.tp,
        scenario.pp,
        scenario.dtype,
        scenario.quantization,
        scenario.kv_cache_dtype,
        cal,
        scenario.max_num_batched_tokens,
    )
    budget = scenario.max_num_batched_tokens * scenario.pp
    result = {k: np.full(n, np.nan) for k in ("first_scheduled_s", "first_token_s", "finished_s")}
    result["num_preemptions"] = np.zeros(n, dtype=np.int64)
    result["generated_tokens"] = np.zeros(n, dtype=np.int64)
    traces: list[_Trace] = []
    totals = _Totals()
    # The scheduler loop allocates millions of small acyclic objects (tuples, lists): the cyclic collector would
    # scan them again and again for nothing, so it pauses for the simulation.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(scenario.dp):
            idx = np.arange(r, n, scenario.dp)
            if len(idx) == 0:
                continue
            out: dict[str, np.ndarray] = {}
            trace = _Trace()
            _simulate_replica(
                isl[idx],
                osl[idx],
                arrival[idx],
                sm,
                pool,
                plan.block_size,
                scenario.max_num_seqs,
                budget,
                out,
                trace,
                totals,
                prefix_caching,
                loops[r],
            )
            for k, v in out.items():
                result[k][idx] = v
            if loops[r] is not None:  # a closed loop's send and engine arrival times are known only now
                sent[idx] = loops[r].sent
                arrival[idx] = loops[r].engine_arrival
            trace.finish()
            traces.append(trace)
    finally:
        if gc_was_enabled:
            gc.enable()
    timeline, first_preempt = _merge_timeline(traces, pool * scenario.dp, sm, scenario)
    req = _request_frame(isl, osl, arrival, result)
    gen_tokens = int(result["generated_tokens"].sum())  # conservation: equals osl.sum() (tested)
    completion = float(np.nanmax(result["finished_s"]))
    summary: dict[str, Any] = {
        "completion_s": completion,
        "cliff_onset_s": first_preempt,
        "preemptions": int(result["num_preemptions"].sum()),
        "peak_running": _peak(traces, "running", timeline["running"]),
        "peak_kv_usage": _peak(traces, "used_blocks", timeline["kv_usage"]) / (pool if len(traces) == 1 else 1),
        "kv_capacity_tokens": plan.kv_capacity_tokens,
        "num_requests": n,
        "generated_tokens": gen_tokens,
        "generation_tokens_per_s": gen_tokens / completion if completion > 0 else 0.0,
        "bound_regime": _bound_regime(int(result["num_preemptions"].sum()), totals),
    }
    for metric in ("ttft", "tpot", "e2e"):
        col = req[f"{metric}_s"].to_numpy()
        summary[f"{metric}_mean_s"] = _mean(col)
        summary[f"{metric}_p50_s"] = _percentile(col, 50)
        summary[f"{metric}_p99_s"] = _percentile(col, 99)
    summary["queue_mean_s"] = _mean(req["queue_s"].to_numpy())
    busy = max(totals.busy_s, 1e-12)
    summary["time_fractions"] = {
        "compute": totals.compute_s / busy,
        "memory": totals.memory_s / busy,
        "communication": totals.comm_s / busy,
        "overhead": totals.overhead_s / busy,
    }
    summary["model"] = model.name
    summary["calibration"] = cal.source
    return Prediction(scenario, plan, timeline, req, summary, cal, sent, totals.steps)


def _peak(traces: list[_Trace], field_name: str, series: pl.Series) -> Any:
    """A peak from the raw trace points of a single replica (the grid can fall between them), else the grid's."""
    if len(traces) == 1:
        return getattr(traces[0], field_name).max().item()
    return series.max() if len(series) else 0


def _request_frame(isl: np.ndarray, osl: np.ndarray, arrival: np.ndarray, r: dict[str, np.ndarray]) -> pl.DataFrame:
    fs, ft, fin = r["first_scheduled_s"], r["first_token_s"], r["finished_s"]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(osl > 1, (fin - ft) / np.maximum(osl - 1, 1), 0.0)
    return pl.DataFrame(
        {
            "request_id": np.arange(len(isl), dtype=np.int64),
            "isl": isl,
            "osl": osl,
            "arrival_s": arrival,
            "first_scheduled_s": fs,
            "first_token_s": ft,
            "finished_s": fin,
            "num_preemptions": r["num_preemptions"],
            "queue_s": fs - arrival,
            "ttft_s": ft - arrival,
            "tpot_s": tpot,
            "e2e_s": fin - arrival,
        }
    )


def _merge_timeline(
    traces: list[_Trace], pool_total: int, sm: StepModel, scenario: Scenario
) -> tuple[pl.DataFrame, float | None]:
    """Sum replicas on a common grid of ≤ TIMELINE_ROWS points; rates from cumulative counters per bin."""
    end = max(float(tr.t[-1]) for tr in traces)
    first_preempt: float | None = None
    for tr in traces:
        pt = np.asarray(tr.preempt_total)
        hit = np.flatnonzero(pt > 0)
        if len(hit):
            ts = float(tr.t[hit[0]])
            first_preempt = ts if first_preempt is None else min(first_preempt, ts)
    rows = min(TIMELINE_ROWS, max(300, sum(len(tr.t) for tr in traces)))
    grid = np.linspace(0.0, end, rows)
    running = np.zeros(rows)
    waiting = np.zeros(rows)
    used = np.zeros(rows)
    cum = {k: np.zeros(rows) for k in ("prompt", "gen", "preempt", "bytes", "flops")}
    for tr in traces:
        tt = np.asarray(tr.t)
        # State holds from one record to the next: take the latest record at or before each grid point.
        pos = np.clip(np.searchsorted(tt, grid, side="right") - 1, 0, len(tt) - 1)
        running += np.asarray(tr.running)[pos]
        waiting += np.asarray(tr.waiting)[pos]
        used += np.interp(grid, tt, np.asarray(tr.used_blocks, dtype=float))  # KV grows steadily between points
        for key, series in (
            ("prompt", tr.prompt_total),
            ("gen", tr.gen_total),
            ("bytes", tr.bytes_total),
            ("flops", tr.flops_total),
        ):
            cum[key] += np.interp(grid, tt, np.asarray(series, dtype=float))
        cum["preempt"] += np.asarray(tr.preempt_total, dtype=float)[pos]
    dt = np.diff(grid, prepend=grid[0])
    dt[0] = dt[1] if rows > 1 else 1.0
    replicas = max(len(traces), 1)  # bytes and FLOPs are per device; average over replicas

    def rate(c: np.ndarray) -> np.ndarray:
        d = np.diff(c, prepend=c[0])
        return np.where(dt > 0, d / np.where(dt > 0, dt, 1), 0.0)

    frame = pl.DataFrame(
        {
            "t_s": grid,
            "running": running.astype(np.int64),
            "waiting": waiting.astype(np.int64),
            "kv_usage": used / max(pool_total, 1),
            "prompt_tokens_per_s": rate(cum["prompt"]),
            "generation_tokens_per_s": rate(cum["gen"]),
            "preemptions_total": cum["preempt"].astype(np.int64),
            "hbm_bw_util": np.clip(rate(cum["bytes"]) / replicas / sm.gpu.hbm_bytes_per_s, 0, 1),
            "compute_util": np.clip(rate(cum["flops"]) / replicas / sm.peak_flops, 0, 1),
        }
    )
    return frame, first_preempt
