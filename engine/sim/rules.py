"""The scheduler's block and token arithmetic, written once for every path that simulates vLLM's steps.

vLLM's rules here: a request holds ``cdiv(num_computed_tokens, block_size)`` blocks, the last one partial (no hash)
unless full; a decoding request needs a new block in the step that computes token c + 1 when its c computed tokens
fill their blocks; a waiting request is admitted with its prefix-cache hit (whole blocks, at most all but one of its
tokens) and the rest chunked to the budget left, only if blocks for ALL its tokens are free
(``scheduler_reserve_full_isl``); a prefill chunk attends to what its request has computed and to itself.

Used as they are by the Python paths (``engine.sim.free_pool.FreePool.admit``, the decode window's Python loop in
``engine.sim.window``) and compiled by numba for the same loop in ``engine.window_kernel``, which registers these
very function objects with ``numba.extending.register_jitable`` (and drops its cached machine code when this file
changes: numba keys a cache to the caller's file only). So they take and return plain numbers (or, for
``decode_run_end``, one indexable: a list in Python, an array compiled), call only each other, and this module
imports neither numba nor NumPy: the Python paths must not pay numba's import. Ceiling division is spelled out
(``-(-a // b)``, ``cdiv``) inside the rules called per request: a call costs the Python loop more than the division.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def cdiv(a: int, b: int) -> int:
    """Ceiling division, as vLLM's ``cdiv``: the blocks ``a`` tokens fill at ``b`` tokens a block."""
    return -(-a // b)


def full_sequence_fits(num_tokens: int, block_size: int, num_free_blocks: int) -> bool:
    """vLLM's admission gate (``scheduler_reserve_full_isl``, on by default in vllm 0.32): a waiting or preempted
    request is admitted only if blocks for ALL its tokens are free, not just for its first chunk (its prefix-cache
    hit blocks sit in the free queue, so they count as free and as needed alike). Without it, chunked prefill
    over-admits long prompts and preempts them again: with 500–1,000-token prompts under a 256–512-token budget, a
    user saw vLLM run 2 requests and never preempt where a first-chunk gate ran 3 and preempted 7–11 times. The gate
    implies the first chunk fits too."""
    return -(-num_tokens // block_size) <= num_free_blocks  # cdiv, spelled out: no call on the hot path


def admission(
    num_tokens: int, cached_blocks: int, token_budget: int, block_size: int, num_free_blocks: int
) -> tuple[int, int, int]:
    """One waiting request's schedule (vLLM's waiting pass for one request): its prefix-cache hit is its
    ``cached_blocks`` still in the free queue, at most ``num_tokens − 1`` tokens in whole blocks; the rest is chunked
    to ``token_budget``; ``allocate_slots`` requires the full sequence free (``full_sequence_fits``). Returns (hit
    blocks, scheduled tokens, blocks held after the step), or (0, 0, 0) when it cannot be admitted (admission stops
    there)."""
    hit_blocks = (num_tokens - 1) // block_size
    if cached_blocks < hit_blocks:
        hit_blocks = cached_blocks
    hit_tokens = hit_blocks * block_size
    chunk = num_tokens - hit_tokens
    if chunk > token_budget:
        chunk = token_budget
    if chunk <= 0 or not full_sequence_fits(num_tokens, block_size, num_free_blocks):
        return 0, 0, 0
    return hit_blocks, chunk, -(-(hit_tokens + chunk) // block_size)


def waiting_pass_slots(num_preempted: int, token_budget: int, num_running: int, max_num_seqs: int) -> int:
    """The most requests vLLM's waiting pass may admit in this step: none in a step whose running pass preempted
    anybody (``schedule()``: ``if not preempted_reqs``, so a request just preempted is not readmitted in the same
    step); otherwise it takes the head of ``waiting`` while ``token_budget`` is left and fewer than
    ``max_num_seqs`` requests run, those admitted in this step counted (``len(self.running) ==
    self.max_num_running_reqs`` stops it), and every admission takes a sequence slot and at least one token. Which
    heads it then admits is ``admission``'s to say (a budget spent before the slots are stops it there: a chunk of
    0 tokens admits nobody)."""
    if num_preempted or token_budget <= 0 or num_running >= max_num_seqs:
        return 0
    slots = max_num_seqs - num_running
    return slots if slots < token_budget else token_budget


def prefill_chunk(num_tokens: int, num_computed: int, token_budget: int, block_size: int) -> tuple[int, int]:
    """A running request still prefilling: the tokens it is scheduled in a step with ``token_budget`` left (the rest
    of its (re)prefill, chunked), and the new blocks they fill."""
    chunk = num_tokens - num_computed
    if chunk > token_budget:
        chunk = token_budget
    return chunk, cdiv(num_computed + chunk, block_size) - cdiv(num_computed, block_size)


def prefill_pairs(num_scheduled: int, num_cached: int) -> float:
    """(query, key) pairs of a prefill chunk of ``num_scheduled`` tokens after ``num_cached`` computed ones: each
    attends to the cached tokens and to those before it in the chunk (the step model prices attention by them)."""
    return num_scheduled * (num_cached + num_scheduled / 2)


def prefill_work(num_scheduled: int, num_computed: int, num_tokens: int) -> tuple[int, float, int]:
    """A prefilling request's chunk as priced work: (tokens, attention pairs, prompt tokens). A lone last token
    (``num_scheduled`` 1 with one left) is priced as the decode it looks like (vLLM cannot tell them apart: the
    reference counts it as a decode, with no prompt token)."""
    if num_scheduled == 1 and num_tokens - num_computed == 1:
        return 1, float(num_computed + 1), 0
    return num_scheduled, prefill_pairs(num_scheduled, num_computed), num_scheduled


def still_prefilling(num_tokens: int, num_computed: int) -> bool:
    """Whether a running request is still prefilling: more than one token left to compute (with one left, its step
    is a decode's, see ``prefill_work``)."""
    return num_tokens - num_computed > 1


def held_blocks(num_computed: int, block_size: int) -> tuple[int, int]:
    """The blocks a request with ``num_computed`` tokens holds, and how many of them are full (hashed: a freed full
    block stays hittable; the partial last one goes to the free queue's front)."""
    return -(-num_computed // block_size), num_computed // block_size


def crossing_phase(computed_offset: int, block_size: int) -> int:
    """A decoding request whose computed tokens are ``computed_offset + j`` before window step j needs a new block in
    the steps j ≡ this phase (mod block_size): those that compute token c + 1 with c a multiple of block_size.
    Works on NumPy arrays of offsets too."""
    return (1 - computed_offset) % block_size


def decode_run_end(
    crossing: Sequence[int], step: int, horizon: int, free: int, decoding: int, block_size: int
) -> tuple[int, int]:
    """The last step up to ``horizon`` to which every decoder's new blocks fit in ``free`` blocks, from ``step`` (the
    last step taken), and the blocks the steps after ``step`` up to it allocate. ``crossing[phase]``: the decoders
    that need a new block in the steps ≡ phase (``crossing_phase``). Over any block_size consecutive steps each
    decoder crosses once, so whole cycles that surely fit are skipped and at most two walked step by step."""
    run_end = step
    blocks = 0
    if horizon - step > 2 * block_size and free >= 2 * decoding:
        cycles = free // decoding - 1
        if (horizon - step) // block_size - 1 < cycles:
            cycles = (horizon - step) // block_size - 1
        run_end += cycles * block_size
        blocks = cycles * decoding
    for s in range(run_end + 1, horizon + 1):
        more = blocks + crossing[s % block_size]
        if more > free:
            return s - 1, blocks
        blocks = more
    return max(run_end, horizon), blocks


def preempt_from_tail(state: Any, shortfall: int, preempt_tail: Callable[[Any], int]) -> int:
    """vLLM's running pass when ``allocate_slots`` cannot cover a step's new blocks: preempt the request of lowest
    priority — the tail of ``running``, the most recently admitted — and retry, until the step's blocks fit or nobody
    is left (``Scheduler.schedule``: ``preempted_req = self.running.pop()``, then ``_preempt_request``; a request that
    fails may preempt itself). ``shortfall``: the step's new blocks beyond the free ones. ``preempt_tail(state)``
    preempts the tail (its blocks freed, ``held_blocks``; back to the front of waiting) and returns what that gives
    the step: the blocks freed plus those of the step's need that were its own (−1: nobody left). Returns how many
    were preempted."""
    preempted = 0
    while shortfall > 0:
        given = preempt_tail(state)
        if given < 0:
            break
        shortfall -= given
        preempted += 1
    return preempted
