"""The replica driver: one vLLM engine's scheduler run to completion, step by step or a decode window at a time.

Each step follows vLLM V1's ``Scheduler.schedule`` (``engine.sim.reference`` writes it out plainly): the running
requests are served first under one token budget, each ``allocate_slots`` that cannot be covered preempting from
the tail (``_schedule_running``, ``_preempt``); waiting requests are admitted only in a step without preemption
(``_schedule_waiting``, ``FreePool.admit``); the step is priced (``_price``) and its tokens emitted, finished
requests freeing their blocks (``_emit_tokens``). Runs of steps in which everyone decodes go through the decode
window instead (``engine.sim.window``), which applies the same rules event to event. A `vllm bench serve` client
(engine.arrivals) gives arrival times, or, with a concurrency cap, sends each next request when one finishes
(``ClientLoop``); its requests not yet sent arrive at +inf (``_next_arrival``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.arrivals import ClientLoop
from engine.perf import StepCost
from engine.sim import config
from engine.sim.config import SimulationError
from engine.sim.free_pool import FreePool
from engine.sim.rules import held_blocks, preempt_from_tail, waiting_pass_slots
from engine.sim.state import BusyTotals, Fate, Outcomes, Running, TracePoints
from engine.sim.window import Window, decode_window, decode_window_compiled, window_kernel

_RUNNING, _PREEMPTED, _FINISHED = int(Fate.RUNNING), int(Fate.PREEMPTED), int(Fate.FINISHED)  # plain ints for NumPy
StepPricer = Callable[[Any, Any, Any, Any], StepCost]  # (tokens, attention pairs, KV tokens read, sequences) → cost


@dataclass(frozen=True)
class ReplicaConfig:
    """One replica's scheduler limits and pool (vLLM's names)."""

    num_gpu_blocks: int  # usable blocks: vLLM's less its null block
    block_size: int
    max_num_seqs: int
    token_budget: int  # max_num_batched_tokens × pp (a PP round)
    enable_prefix_caching: bool = True
    # False: vLLM V0's scheduler without chunked prefill (``_schedule_default``), stepped one step at a time.
    enable_chunked_prefill: bool = True
    watermark_blocks: int = 0  # V0's block manager keeps this many blocks free at admission (0.01 of the pool)
    # vLLM's async scheduling (``_Replica._enqueue_arrivals``): step n+1 is scheduled as step n is launched
    async_scheduling: bool = False


class StepLog:
    """Every priced step's inputs, in order: a (4, steps) array of tokens, attention pairs, KV tokens read and
    sequences (``engine.fidelity.steps`` re-prices a run's steps for any calibration from it)."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []

    def record(self, tokens: Any, pairs: Any, kv_read: Any, seqs: Any) -> None:
        cols = (np.atleast_1d(np.asarray(x, dtype=float)) for x in (tokens, pairs, kv_read, seqs))
        self._parts.append(np.stack(np.broadcast_arrays(*cols)))

    def steps(self) -> np.ndarray:
        return np.concatenate(self._parts, axis=1) if self._parts else np.zeros((4, 0))


def unit_step_cost(tokens: Any, pairs: Any, kv_read: Any, seqs: Any) -> StepCost:
    """A pricer whose every step lasts 1: the run's clock counts steps (the parity harness and step traces)."""
    one = np.ones(np.broadcast(*(np.asarray(x) for x in (tokens, pairs, kv_read, seqs))).shape)
    zero = one * 0.0
    return StepCost(one, zero, zero, zero, zero, zero, zero)


def simulate_replica(
    isl: np.ndarray,
    osl: np.ndarray,
    arrival: np.ndarray,
    price: StepPricer,
    cfg: ReplicaConfig,
    trace: TracePoints,
    totals: BusyTotals,
    client: ClientLoop | None = None,
    step_log: StepLog | None = None,
) -> Outcomes:
    """Run one replica's scheduler to completion; per-request outcomes indexed like ``isl``. ``client`` (a bench
    client's concurrency cap) replaces ``arrival``; ``step_log`` receives every priced step's inputs."""
    return _Replica(isl, osl, arrival, price, cfg, trace, totals, client, step_log).run()


class _Replica:
    def __init__(
        self,
        isl: np.ndarray,
        osl: np.ndarray,
        arrival: np.ndarray,
        price: StepPricer,
        cfg: ReplicaConfig,
        trace: TracePoints,
        totals: BusyTotals,
        client: ClientLoop | None,
        step_log: StepLog | None,
    ) -> None:
        self.n = n = len(isl)
        self.cfg, self.price_fn, self.trace, self.totals, self.client, self.step_log = (
            cfg, price, trace, totals, client, step_log,
        )  # fmt: skip
        self.isl = np.ascontiguousarray(isl, dtype=np.int64)
        self.osl = np.ascontiguousarray(osl, dtype=np.int64)
        self.isl_list, self.osl_list = self.isl.tolist(), self.osl.tolist()
        self.out = Outcomes.empty(n)
        self.arrival_order = np.argsort(arrival, kind="stable")
        self.arrival_sorted = arrival[self.arrival_order]
        if client is not None:  # sent in index order, arrivals filled in as slots free: read the client's own array
            self.arrival_order, self.arrival_sorted = np.arange(n), client.engine_arrival
        self.next_arrival = 0
        self.running = Running()
        self.waiting = np.empty(0, dtype=np.int64)
        self.pool = FreePool(cfg.num_gpu_blocks, cfg.enable_prefix_caching)
        self.t = 0.0
        self.step_start = 0.0  # when the step just taken started (async scheduling built the next one then)
        self.prompt_total = self.gen_total = self.bytes_total = self.flops_total = 0.0
        self.preempt_total = 0
        self.num_finished = 0
        self.hidden_waiting = 0  # waiting requests a V0 decode window does not see (added to its trace rows)

    def run(self) -> Outcomes:
        self._record()
        steps = 0
        while self.num_finished < self.n:
            steps += 1
            if steps > config.MAX_STEPS:
                raise SimulationError("simulation exceeded its step limit; reduce num_requests or output lengths")
            self._enqueue_arrivals(self.step_start if self.cfg.async_scheduling else self.t)
            if self._idle():
                self._enqueue_arrivals(self.t)  # nothing was scheduled ahead: what has arrived is taken at once
            if self._idle():
                self.t = self.step_start = self._next_arrival()  # idle until the next arrival
                self._record()
                continue
            self.step_start = self.t
            if not self.cfg.enable_chunked_prefill:
                self._schedule_default()
            elif not (config.USE_DECODE_WINDOWS and self._run_window()):
                self._general_step()
            self._record()
        if self.pool.num_free_blocks != self.cfg.num_gpu_blocks:  # every block back once all requests finished
            raise SimulationError(
                f"internal block accounting: {self.pool.num_free_blocks} of {self.cfg.num_gpu_blocks} blocks free"
            )
        return self.out

    # ------------------------------------------------------------------ arrivals, trace, pricing
    def _idle(self) -> bool:
        """Nothing running and nothing waiting: the engine has no step to take."""
        return len(self.running) == 0 and len(self.waiting) == 0

    def _arrivals_pending(self) -> bool:
        return self.next_arrival < self.n

    def _enqueue_arrivals(self, cutoff: float) -> None:
        """Arrivals up to ``cutoff`` join the back of the waiting queue: up to now, or with async scheduling up to the
        start of the step just taken. vLLM's engine core (``step_with_batch_queue``, a batch queue of two) then
        schedules step n+1 as it launches step n and reads new requests in between, so a request that arrives while
        step n runs is first scheduled in step n+2. An engine with nothing to schedule scheduled nothing ahead: it
        takes what has arrived at once (``run``)."""
        k0 = self.next_arrival
        if k0 < self.n and self.arrival_sorted[k0] <= cutoff:
            k = int(np.searchsorted(self.arrival_sorted, cutoff, side="right"))
            self.waiting = np.concatenate([self.waiting, self.arrival_order[k0:k]])
            self.next_arrival = k

    def _next_arrival(self) -> float:
        """The next arrival's time, to which an idle replica skips; one not yet sent by a closed-loop client would
        mean the client waits on a request the engine does not hold (a bookkeeping error, never a state to wait
        in)."""
        t_next = float(self.arrival_sorted[self.next_arrival])
        if not np.isfinite(t_next):
            raise SimulationError("internal: the engine is idle but the client's next request was never sent")
        return t_next

    def _finished(self, request_ids: np.ndarray, finish_s: np.ndarray) -> None:
        """Requests finished at ``finish_s``: a closed-loop client sends the next ones into their freed slots (their
        arrivals are after the step that finished them, so the driver sees them at its next arrival check)."""
        self.num_finished += len(request_ids)
        if self.client is not None:
            self.client.on_finished(finish_s)

    def _record(self) -> None:
        used = self.cfg.num_gpu_blocks - self.pool.num_free_blocks
        self.trace.row(
            self.t, len(self.running), len(self.waiting), used, self.prompt_total, self.gen_total,
            self.preempt_total, self.bytes_total, self.flops_total,
        )  # fmt: skip

    def _price(self, tokens: Any, pairs: Any, kv_read: Any, seqs: Any) -> tuple[StepCost, np.ndarray]:
        """Price steps (scalars: one step; arrays: a window's steps), adding their busy time to the totals; returns
        the costs and each step's duration."""
        if self.step_log is not None:
            self.step_log.record(tokens, pairs, kv_read, seqs)
        cost = self.price_fn(tokens, pairs, kv_read, seqs)
        k = int(np.size(tokens))
        dts = _per_step(cost.time_s, k)

        def first(x: Any) -> float:
            return float(np.sum(x[:k])) if np.ndim(x) else float(x) * k

        totals = self.totals
        totals.busy_s += float(dts.sum())
        totals.compute_s += first(cost.compute_s)
        totals.memory_s += first(cost.memory_s)
        totals.comm_s += first(cost.comm_s)
        totals.overhead_s += first(cost.overhead_s)
        totals.steps += k
        return cost, dts

    # ------------------------------------------------------------------ the decode-window fast path
    def _run_window(self, until_event: bool = False, admit: bool = True) -> bool:
        """Take the next steps as a decode window when they qualify: all running requests decode but for the tail,
        which may be prefilling (not with arrivals pending: the arrival horizon prices decode steps only). False:
        the general scheduler takes the step. ``until_event``: the window ends after its first finish or preemption
        as it does with arrivals pending (V0's driver: its next step may be a prefill-only one). ``admit`` False:
        the window sees no waiting request (V0's driver, whose head request cannot be admitted before a finish or
        preemption frees blocks or a slot); they keep their place behind any the window preempts."""
        running = self.running
        m = len(running)
        if not m or m > self.cfg.token_budget:
            return False
        pending = self._arrivals_pending() or until_event
        want = running.tokens_wanted()
        if not (m == 1 or int(want[:-1].max()) == 1) or not (want[-1] == 1 or not pending):
            return False
        max_steps = self._steps_before_next_arrival()
        if max_steps < 1:
            return False
        cfg = self.cfg
        limits = (cfg.block_size, cfg.token_budget, cfg.max_num_seqs)
        kernel = window_kernel(pending)
        waiting = self.waiting if admit else self.waiting[:0]
        if kernel is not None:
            window = decode_window_compiled(
                kernel, self.pool, running, waiting, self.isl, self.osl, self.out.generated_tokens, limits,
                pending, max_steps,
            )  # fmt: skip
        else:
            window = decode_window(
                self.pool, running, waiting, self.isl_list, self.osl_list, self.out.generated_tokens, limits,
                pending, max_steps,
            )  # fmt: skip
        if window is None:
            return False
        self.hidden_waiting = len(self.waiting) - len(waiting)  # for the trace's waiting count
        self._apply_window(window, m)
        self.hidden_waiting = 0
        return True

    def _steps_before_next_arrival(self) -> int:
        """With an arrival pending, only steps that surely end before it (priced at the horizon's longest step);
        else the step limit (+inf arrivals: a closed-loop client sends them when a request finishes)."""
        if not (self._arrivals_pending() and self.arrival_sorted[self.next_arrival] < np.inf):
            return config.MAX_STEPS
        running = self.running
        m = len(running)
        ctx = float(running.num_computed_tokens.sum())
        gap = float(self.arrival_sorted[self.next_arrival]) - self.t
        max_steps = int(gap / float(self.price_fn(m, ctx + m, ctx, m).time_s))
        if max_steps >= 1:
            ctx_end = ctx + max_steps * m
            max_steps = int(gap / float(self.price_fn(m, ctx_end + m, ctx_end, m).time_s))
        return max_steps

    def _apply_window(self, w: Window, m: int) -> None:
        """Price the window's steps in one call, trace its events, and take its outcomes into the replica's state
        (``m``: the running requests it started with)."""
        jn = len(w.active)
        # The step quantities are formed as floats directly (the pricer's dtype; every sum is an integer far below
        # 2**53, so exactly the integer sums converted): one conversion pass instead of one per input.
        active = w.active.astype(float)
        kv_read = np.arange(jn, dtype=float)
        kv_read *= active
        kv_read += w.ctx0
        pairs = kv_read + active
        pairs += w.pre_pairs
        cost, dts = self._price(
            np.add(active, w.pre_tokens), pairs, np.add(kv_read, w.pre_kv), np.add(active, w.pre_seqs)
        )
        tcum = np.cumsum(dts)
        tcum += self.t
        t_start = np.concatenate([[self.t], tcum[:-1]])
        gcum = self.gen_total + np.cumsum(w.active + w.sampled)
        pcum = self.prompt_total + np.cumsum(w.prompt)
        bcum = np.cumsum(_per_step(cost.bytes_moved, jn))
        bcum += self.bytes_total
        fcum = np.cumsum(_per_step(cost.flops, jn))
        fcum += self.flops_total
        self._trace_events(w.events, tcum, pcum, gcum, bcum, fcum)
        self.t, self.gen_total, self.prompt_total = float(tcum[-1]), float(gcum[-1]), float(pcum[-1])
        self.bytes_total, self.flops_total = float(bcum[-1]), float(fcum[-1])
        _first_times(w, m, t_start, tcum, self.out)
        self._window_outcomes(w, tcum)

    def _window_outcomes(self, w: Window, tcum: np.ndarray) -> None:
        """Preemptions and completions of the window's positions; those still running form the new batch."""
        out, jn, bs = self.out, len(w.active), self.cfg.block_size
        fates = np.asarray(w.fate, dtype=np.int8)
        rids = np.asarray(w.request_id, dtype=np.int64)
        pre_ids = rids[fates == _PREEMPTED]
        out.num_preemptions += np.bincount(pre_ids, minlength=self.n)  # a request may be preempted many times
        self.preempt_total += len(pre_ids)
        fin_pos = np.flatnonzero(fates == _FINISHED)
        if len(fin_pos):
            at_f = np.asarray(w.fate_step, dtype=np.int64)[fin_pos]
            fin_ids = rids[fin_pos]
            out.finished_s[fin_ids] = tcum[at_f - 1]
            out.generated_tokens[fin_ids] = np.asarray(w.output_offset, dtype=np.int64)[fin_pos] + at_f
            self._finished(fin_ids, tcum[at_f - 1])
        front = np.asarray(w.preempted_waiting[::-1], dtype=np.int64)
        self.waiting = np.concatenate([front, self.waiting[w.waiting_taken :]])
        kp = np.flatnonzero(fates == _RUNNING)
        r_id = rids[kp]
        comp = np.asarray(w.computed_offset, dtype=np.int64)[kp] + jn
        self.running = Running(
            r_id,
            comp,
            np.asarray(w.output_offset, dtype=np.int64)[kp] + jn,
            -(-comp // bs),  # a partially prefilled request holds ceil(computed / bs) too
            self.isl[r_id],
            self.osl[r_id],
        )

    def _trace_events(self, events: Any, *cums: np.ndarray) -> None:
        """Append a window's event records to the trace in whole-array steps (tens of thousands of events per run
        make a per-event Python loop over NumPy scalars a large share of the run time)."""
        if not len(events):
            return
        tcum, pcum, gcum, bcum, fcum = cums
        ev = np.array(events, dtype=np.int64).reshape(-1, 5)
        idx = ev[:, 0] - 1
        used = self.cfg.num_gpu_blocks - ev[:, 4]
        self.trace.block(
            tcum[idx], ev[:, 1], ev[:, 2] + self.hidden_waiting, used, pcum[idx], gcum[idx],
            self.preempt_total + ev[:, 3], bcum[idx], fcum[idx],
        )  # fmt: skip

    # ------------------------------------------------------------------ the general step
    def _general_step(self) -> None:
        """One scheduler step: running requests first (allocate or preempt), then admissions if nobody was
        preempted, then pricing and token emission."""
        running = self.running
        want = running.tokens_wanted()
        scheduled, num_preempted = self._schedule_running(want)
        kept = self.running  # the running requests that keep their place this step
        admitted = self._schedule_waiting(self.cfg.token_budget - int(scheduled.sum()), num_preempted)
        decoding = want[: len(kept)] == 1
        computed_before = running.num_computed_tokens[: len(kept)]
        if not self._price_step(decoding, computed_before, scheduled, admitted):
            return
        self._emit_tokens()

    # ------------------------------------------------------------------ vLLM V0 without chunked prefill
    def _schedule_default(self) -> None:
        """vLLM V0's ``Scheduler._schedule_default`` with chunked prefill off: waiting prompts first, each whole
        (``_schedule_prefills``); a step that schedules any prompt runs no decode. Only a step without prompts serves
        the running requests (``_schedule_running``: one token each, preempting from the tail when the pool cannot
        take the next token, the victim recomputed from the front of ``waiting``). At high concurrency every
        admission stalls every running request's decode for a prefill step, which V1's mixed batches do not."""
        if config.USE_DECODE_WINDOWS and not self._head_admissible() and self._run_window(True, admit=False):
            return  # nothing admissible: decode steps up to the first finish or preemption, as one window
        admitted = self._schedule_prefills()
        if admitted is not None:
            none = np.empty(0, dtype=np.int64)
            if self._price_step(np.empty(0, dtype=bool), none, none, admitted):
                self._emit_tokens()
            return
        running = self.running
        want = running.tokens_wanted()  # 1 each: prompts are computed whole
        scheduled, _ = self._schedule_running(want)
        kept = len(self.running)
        if self._price_step(want[:kept] == 1, running.num_computed_tokens[:kept], scheduled, None):
            self._emit_tokens()

    def _head_admissible(self) -> bool:
        """Whether ``_schedule_prefills`` would take (or refuse with an error) the head of ``waiting`` now. Until a
        finish or preemption it cannot become admissible: decodes only take blocks, never free them."""
        if not len(self.waiting):
            return False
        cfg, req = self.cfg, int(self.waiting[0])
        num_tokens = self.isl_list[req] + int(self.out.generated_tokens[req])
        need = -(-num_tokens // cfg.block_size)
        if num_tokens > cfg.token_budget or cfg.num_gpu_blocks - need < cfg.watermark_blocks:
            return True  # _schedule_prefills says why vLLM would drop it
        fits = self.pool.num_free_blocks - need >= cfg.watermark_blocks
        return fits and len(self.running) < cfg.max_num_seqs

    def _schedule_prefills(self) -> tuple[np.ndarray, np.ndarray] | None:
        """V0's ``_schedule_prefills`` without chunking: from the head of ``waiting``, each request's whole token
        count (prompt plus any output it is recomputing) while ``BlockSpaceManager.can_allocate`` keeps the
        watermark free and the budget (``can_schedule``: tokens and max_num_seqs, the running requests counted)
        allows; the first that does not fit stops admission. A request longer than the budget or than the whole
        pool is one vLLM would drop (``FINISHED_IGNORED``): an error here, naming the flag. Returns the admitted
        requests' scheduled and hit (none: no prefix cache) tokens, or None."""
        cfg, out, pool = self.cfg, self.out, self.pool
        left, seqs = cfg.token_budget, len(self.running)
        picked: list[tuple[int, int, int]] = []  # (request, tokens, blocks)
        for req in self.waiting.tolist():
            num_tokens = self.isl_list[req] + int(out.generated_tokens[req])
            need = -(-num_tokens // cfg.block_size)
            if num_tokens > cfg.token_budget or cfg.num_gpu_blocks - need < cfg.watermark_blocks:
                raise SimulationError(
                    f"a {num_tokens}-token request exceeds max_num_batched_tokens={cfg.token_budget} or the KV pool"
                    " with chunked prefill off (vLLM would drop it): raise max_num_batched_tokens to the longest"
                    " request or turn chunked prefill on"
                )
            if pool.num_free_blocks - need < cfg.watermark_blocks or num_tokens > left or seqs >= cfg.max_num_seqs:
                break
            pool.allocate(need)
            picked.append((req, num_tokens, need))
            left -= num_tokens
            seqs += 1
        if not picked:
            return None
        cols = np.asarray(picked, dtype=np.int64)
        admitted, scheduled, blocks = cols[:, 0], cols[:, 1], cols[:, 2]
        self.waiting = self.waiting[len(picked) :]
        first = out.first_scheduled_s[admitted]
        out.first_scheduled_s[admitted] = np.where(np.isnan(first), self.t, first)
        r = self.running
        self.running = Running(
            np.concatenate([r.request_id, admitted]),
            np.concatenate([r.num_computed_tokens, scheduled]),
            np.concatenate([r.num_output_tokens, out.generated_tokens[admitted]]),
            np.concatenate([r.num_blocks, blocks]),
            np.concatenate([r.num_prompt_tokens, self.isl[admitted]]),
            np.concatenate([r.max_tokens, self.osl[admitted]]),
        )
        return scheduled, np.zeros(len(picked), dtype=np.int64)

    # ------------------------------------------------------------------ the running pass (V1 and V0)
    def _schedule_running(self, want: np.ndarray) -> tuple[np.ndarray, int]:
        """vLLM's running pass: each request in order asks for its wanted tokens (chunked to the budget left) and
        the blocks they fill; when they do not all fit, requests are preempted from the tail until the rest do
        (``preempt_from_tail``; ``_preempt`` carries them out together, the tail first). Returns the kept requests'
        scheduled tokens and the preemptions."""
        r, bs, pool = self.running, self.cfg.block_size, self.pool
        c = r.num_computed_tokens
        prev = np.cumsum(want) - want
        sched = np.minimum(want, np.maximum(0, self.cfg.token_budget - prev))
        after = -(-(c + sched) // bs)
        need = np.maximum(0, after - r.num_blocks)
        shortfall = int(need.sum()) - pool.num_free_blocks
        p = 0
        if shortfall > 0:
            gives = (r.num_blocks + need).tolist()  # what preempting each gives the step: its blocks, its new ones
            p = preempt_from_tail(gives, shortfall, _take_tail)
            self._preempt(len(r) - p)
        keep_n = len(r) - p
        kept_sched = sched[:keep_n]
        pool.allocate(int(need[:keep_n].sum()))
        self.running = Running(
            r.request_id[:keep_n], c[:keep_n] + kept_sched, r.num_output_tokens[:keep_n], after[:keep_n],
            r.num_prompt_tokens[:keep_n], r.max_tokens[:keep_n],
        )  # fmt: skip
        return kept_sched, p

    def _preempt(self, keep_n: int) -> None:
        """vLLM's ``_preempt_request`` for every running request past ``keep_n``, the tail first: its blocks freed
        (full ones stay hittable, FreePool.free), its progress forgotten, back to the front of ``waiting``."""
        r, bs, out = self.running, self.cfg.block_size, self.out
        for pos in range(len(r) - 1, keep_n - 1, -1):
            self.pool.free(int(r.request_id[pos]), *held_blocks(int(r.num_computed_tokens[pos]), bs))
        victims = r.request_id[keep_n:]
        out.generated_tokens[victims] = r.num_output_tokens[keep_n:]
        out.num_preemptions[victims] += 1
        self.preempt_total += len(victims)
        self.waiting = np.concatenate([victims, self.waiting])

    def _schedule_waiting(self, left: int, num_preempted: int) -> tuple[np.ndarray, np.ndarray] | None:
        """vLLM's waiting pass: admit from the head up to ``waiting_pass_slots`` (none in a step that preempted, the
        budget ``left``, max_num_seqs), one ``FreePool.admit`` each (each hit is looked up after the previous
        admissions' evictions, as vLLM does). Returns the admitted requests' scheduled and hit tokens, or None."""
        running, waiting, out = self.running, self.waiting, self.out
        slots = waiting_pass_slots(num_preempted, left, len(running), self.cfg.max_num_seqs)
        picked: list[tuple[int, int, int, int]] = []  # (request, hit tokens, scheduled tokens, blocks)
        for req in waiting[:slots].tolist():
            num_tokens = self.isl_list[req] + int(out.generated_tokens[req])
            hit, chunk, blocks = self.pool.admit(req, num_tokens, left, self.cfg.block_size)
            if not chunk:
                break
            picked.append((req, hit, chunk, blocks))
            left -= chunk
        if not picked:
            return None
        cols = np.asarray(picked, dtype=np.int64)
        admitted, hit, scheduled, blocks = cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3]
        self.waiting = waiting[len(picked) :]
        first = out.first_scheduled_s[admitted]
        out.first_scheduled_s[admitted] = np.where(np.isnan(first), self.t, first)
        self.running = Running(
            np.concatenate([running.request_id, admitted]),
            np.concatenate([running.num_computed_tokens, hit + scheduled]),
            np.concatenate([running.num_output_tokens, out.generated_tokens[admitted]]),
            np.concatenate([running.num_blocks, blocks]),
            np.concatenate([running.num_prompt_tokens, self.isl[admitted]]),
            np.concatenate([running.max_tokens, self.osl[admitted]]),
        )
        return scheduled, hit

    def _price_step(
        self,
        decoding: np.ndarray,
        computed: np.ndarray,
        scheduled: np.ndarray,
        admitted: tuple[np.ndarray, np.ndarray] | None,
    ) -> bool:
        """Price the step's batch: decodes read their context, prefill chunks attend to what they have computed
        and to themselves. False when nothing could be scheduled (the time then skips to the next arrival)."""
        adm_sched, adm_hit = admitted if admitted is not None else (np.empty(0, np.int64), np.empty(0, np.int64))
        n_dec = int(decoding.sum())
        dec_ctx = float(computed[decoding].sum())
        pre_c = computed[~decoding].astype(float)
        pre_s = scheduled[~decoding].astype(float)
        pre_tokens = float(pre_s.sum() + adm_sched.sum())
        pairs = dec_ctx + n_dec + float(np.sum(pre_s * (pre_c + pre_s / 2)))
        pairs += float(np.sum(adm_sched * (adm_hit + adm_sched / 2)))
        tokens = n_dec + pre_tokens
        seqs = int((scheduled > 0).sum()) + len(adm_sched)
        if tokens == 0:
            # Nothing schedulable (pool too small for the head request): skip to the next arrival or give up.
            if self._arrivals_pending():
                self.t = max(self.t, self._next_arrival())
                return False
            raise SimulationError(
                "no request can be scheduled: the KV pool is too small for the next request's first chunk"
            )
        cost, _ = self._price(tokens, pairs, dec_ctx + float(pre_c.sum()) + float(adm_hit.sum()), seqs)
        self.t += float(cost.time_s)
        self.prompt_total += pre_tokens
        self.bytes_total += float(cost.bytes_moved)
        self.flops_total += float(cost.flops)
        return True

    def _emit_tokens(self) -> None:
        """Requests whose computed tokens reach their token count sample one; those at max_tokens finish and free
        their blocks after the step (anonymous: nobody can hit them)."""
        r, out, t = self.running, self.out, self.t
        emit = r.num_computed_tokens == r.num_prompt_tokens + r.num_output_tokens
        if not emit.any():
            return
        r.num_output_tokens = r.num_output_tokens + emit
        self.gen_total += int(emit.sum())
        e = r.request_id[emit]
        out.first_token_s[e[np.isnan(out.first_token_s[e])]] = t
        fin_mask = emit & (r.num_output_tokens >= r.max_tokens)
        if not fin_mask.any():
            return
        fin = r.request_id[fin_mask]
        out.finished_s[fin] = t
        out.generated_tokens[fin] = r.num_output_tokens[fin_mask]
        full = int((r.num_computed_tokens[fin_mask] // self.cfg.block_size).sum())
        self.pool.free(-1, int(r.num_blocks[fin_mask].sum()), full)
        self._finished(fin, np.full(len(fin), t))
        self.running = r.select(~fin_mask)


def _take_tail(gives: list[int]) -> int:
    """For ``preempt_from_tail``: what the tail of running gives the step, taken off ``gives`` (−1: nobody left);
    ``_preempt`` carries the counted preemptions out together, the tail first."""
    return gives.pop() if gives else -1


def _per_step(x: Any, k: int) -> np.ndarray:
    """A cost as one float per step: arrays already are (no copy), a scalar is repeated."""
    a = np.asarray(x, dtype=float)
    return a if a.shape == (k,) else a * np.ones(k)


def _first_times(w: Window, m: int, t_start: np.ndarray, tcum: np.ndarray, out: Outcomes) -> None:
    """Set first-scheduled and first-token times of the window's admissions, never overwriting earlier ones (a
    request can be admitted many times in a cliff run; its first admission in the window is the one that counts).
    ``m``: the running requests the window started with (positions before the admitted ones)."""
    if not len(w.admitted_step) and not len(w.prefilled):
        return
    rs = np.array(w.request_id[m:], dtype=np.int64)
    steps = np.array(w.admitted_step, dtype=np.int64)
    done = np.ones(len(rs), dtype=bool)  # prefill completed in the admission step
    done[np.array(w.partial, dtype=np.int64) - m] = False
    extra = np.array(w.prefilled, dtype=np.int64).reshape(-1, 2)
    tok_r = np.concatenate([extra[:, 0], rs[done]])
    tok_steps = np.concatenate([extra[:, 1], steps[done]])
    n = len(out.first_scheduled_s)
    # First admission of each request: its smallest position in admission order (np.minimum.at over arrays of the
    # run's requests is ~50× cheaper than np.unique(return_index=True) over a 10k-request cliff run's ~73k admissions).
    first_pos = np.full(n, len(rs), dtype=np.int64)
    np.minimum.at(first_pos, rs, np.arange(len(rs), dtype=np.int64))
    admitted = first_pos < len(rs)
    first_admission = np.zeros(n, dtype=np.int64)
    first_admission[admitted] = steps[first_pos[admitted]]
    _set_unset(out.first_scheduled_s, admitted, t_start, first_admission)
    # First token of each request: its earliest step (a token's time depends on its step only).
    never = np.iinfo(np.int64).max
    first_step = np.full(n, never, dtype=np.int64)
    np.minimum.at(first_step, tok_r, tok_steps)
    _set_unset(out.first_token_s, first_step != never, tcum, first_step)


def _set_unset(dest: np.ndarray, has: np.ndarray, times: np.ndarray, step: np.ndarray) -> None:
    """dest[r] = times[step[r] - 1] for the requests r that ``has`` marks and ``dest`` does not hold yet (NaN)."""
    r = np.flatnonzero(has & np.isnan(dest))
    if len(r):
        dest[r] = times[step[r] - 1]
