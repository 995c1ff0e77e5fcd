"""A vLLM-V1-like scheduler simulation: the cliff — KV fills, requests are preempted and recomputed — predicted.

This module is the simulator's public face (``predict``, ``Prediction``, ``SimulationError``, the frame columns);
the simulator itself is the package ``engine.sim``, laid out as vLLM's scheduler is:

- ``engine.sim.reference`` — the specification: vLLM V1's ``Scheduler.schedule`` and ``allocate_slots`` written out
  plainly, held step for step to vLLM's real scheduler by ``engine.sim.parity`` (``python -m engine parity``).
- ``engine.sim.rules`` — the block and token arithmetic (blocks held, block crossings, admission with
  ``full_sequence_fits``, vLLM's ``scheduler_reserve_full_isl`` gate, prefill chunks and their priced work), written
  once: the Python paths call it, the compiled window loop compiles the same functions.
- ``engine.sim.free_pool`` — the free-block queue (prefix-cache hits of preempted requests, partial last blocks to
  the front) and ``admit``: one waiting request's hit lookup and ``allocate_slots``, which both Python paths use.
- ``engine.sim.state`` — request fates (``Fate``), the running batch in vLLM's names, per-request outcomes, trace.
- ``engine.sim.replica`` — the driver: one replica's steps (``_schedule_running`` allocates or preempts from the
  tail, ``_schedule_waiting`` admits, ``_price_step``, ``_emit_tokens``), or a decode window at a time.
- ``engine.sim.window`` — the decode-window fast path: steps where every running request decodes (the tail may
  be prefilling) are planned event to event; its loop also exists compiled (``engine.window_kernel``, numba).
- ``engine.sim.resolve`` / ``engine.sim.predict`` / ``engine.sim.assemble`` — the scenario resolved once, the
  replicas run behind the round-robin router, the timeline, request frame and summary.

Rules reproduced (see ``engine.sim.reference`` for vLLM's names): one token budget per step; running requests
first, each needing ceil((computed + new) / block_size) blocks, the tail preempted (freed, progress forgotten, to
the front of waiting) until they fit; waiting requests admitted only in steps without preemption, while the budget,
max_num_seqs and blocks for ALL their tokens allow; a resumed request re-prefills less its prefix-cache hit; the
pool holds ``kv_blocks − 1`` (vLLM's null block). DP replicas are independent behind a round-robin router; PP is
simulated per pipeline round (see ``engine.perf``) with a token budget of pp × max_num_batched_tokens per round.
"""

from __future__ import annotations

from engine.sim.assemble import REQUEST_COLUMNS, TIMELINE_COLUMNS
from engine.sim.config import SimulationError
from engine.sim.predict import Prediction, _predict_cached, predict

__all__ = ["REQUEST_COLUMNS", "TIMELINE_COLUMNS", "Prediction", "SimulationError", "_predict_cached", "predict"]
