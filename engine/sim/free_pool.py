"""vLLM's free-block queue (``BlockPool``'s ``free_block_queue``) as counts of blocks, and the block arithmetic of
``KVCacheManager.allocate_slots``: the one place the simulator's Python paths take, free and hit blocks."""

from __future__ import annotations

from collections import deque

from engine.sim.rules import admission, cdiv, full_sequence_fits

__all__ = ["FreePool", "cdiv", "full_sequence_fits"]  # the block arithmetic lives in engine.sim.rules


class FreePool:
    """vLLM's free-block queue. With prefix caching (v1's default) a preempted request's freed full blocks keep their
    contents (and hashes) until evicted; allocation evicts from the front (least recently freed first, and a
    request's last blocks before its first), so a request re-admitted soon after its preemption finds its prefix
    still cached. A request's partial last block has no hash: vLLM puts it at the FRONT of the queue, to be reused
    first (``BlockPool.free_blocks``; ``engine.sim.reference`` spells it out), and nobody can hit it.

    The queue is ``front_unhashed`` anonymous blocks, then a deque of [owner, blocks] segments (owner −1:
    anonymous); ``segment`` maps an owner to its segment still in the deque. Evictions are applied lazily: the
    queue only ever loses blocks from its front and gains them at its back (or unhashed ones at its very front), and
    never holds fewer than are allocated, so evicting a sum of allocations at once leaves it as evicting each in
    turn would have — as long as nothing looks at a segment in between (``cached`` and ``reclaim`` flush first).
    ``pending_evictions`` are owed by the whole queue (its front first), ``deque_evictions`` by the deque alone:
    putting unhashed blocks at the front only settles the first against ``front_unhashed``, never walks the deque
    (a cliff run frees a partial block at every preemption; walking the deque each time took ~20 % of the Python
    loop's time)."""

    __slots__ = (
        "caching",
        "deque_evictions",
        "fifo",
        "front_unhashed",
        "num_free_blocks",
        "pending_evictions",
        "segment",
    )

    def __init__(self, blocks: int, caching: bool) -> None:
        self.num_free_blocks = blocks
        self.caching = caching
        self.front_unhashed = 0
        self.fifo: deque[list[int]] = deque([[-1, blocks]])
        self.segment: dict[int, list[int]] = {}  # owner → its segment still in the deque
        self.pending_evictions = 0  # blocks allocated but not yet evicted from the queue
        self.deque_evictions = 0  # blocks evicted from the deque's front but not yet taken off it

    def allocate(self, k: int) -> None:
        """Hand out ``k`` blocks from the queue's front (evicted lazily)."""
        self.num_free_blocks -= k
        self.pending_evictions += k

    def _settle_front(self) -> None:
        """Evict the pending allocations from ``front_unhashed``; what it cannot cover is owed by the deque."""
        k = self.pending_evictions
        self.pending_evictions = 0
        front = self.front_unhashed
        if k <= front:
            self.front_unhashed = front - k
        else:
            self.front_unhashed = 0
            self.deque_evictions += k - front

    def flush(self) -> None:
        """Evict the pending allocations from the front of the queue, down into the deque."""
        if not self.caching:
            self.pending_evictions = 0
            return
        if self.pending_evictions:
            self._settle_front()
        k = self.deque_evictions
        self.deque_evictions = 0
        fifo, segment = self.fifo, self.segment
        while k > 0:
            seg = fifo.popleft()
            owner, blocks = seg
            if blocks > k:  # partly evicted: the rest stays at the front
                seg[1] = blocks - k
                fifo.appendleft(seg)
                return
            k -= blocks
            if owner >= 0:
                segment.pop(owner, None)

    def free(self, owner: int, blocks: int, full: int) -> None:
        """Free a request's ``blocks``, ``full`` of them hashed (computed tokens // block size): those join the back,
        hittable under ``owner`` ≥ 0 (a preemption) or anonymous (−1, a finished request); the rest (its partial
        last block) goes to the front."""
        self.num_free_blocks += blocks
        if not self.caching or blocks <= 0:
            return
        if blocks > full:  # unhashed blocks to the front, after the pending evictions (which came first)
            k = self.pending_evictions
            if k:  # _settle_front, inlined: a cliff run frees a partial block at every preemption
                self.pending_evictions = 0
                front = self.front_unhashed
                if k <= front:
                    self.front_unhashed = front - k + blocks - full
                else:
                    self.front_unhashed = blocks - full
                    self.deque_evictions += k - front
            else:
                self.front_unhashed += blocks - full
        if full <= 0:
            return
        fifo = self.fifo
        if owner >= 0:
            seg = [owner, full]
            self.segment[owner] = seg
            fifo.append(seg)
        elif fifo and fifo[-1][0] < 0:
            fifo[-1][1] += full  # anonymous blocks next to anonymous ones: one segment
        else:
            fifo.append([-1, full])

    def cached(self, owner: int) -> int:
        """Blocks of a preempted request's prefix still in the queue."""
        if owner not in self.segment:
            return 0
        if self.pending_evictions or self.deque_evictions:
            self.flush()
        seg = self.segment.get(owner)
        return seg[1] if seg is not None else 0

    def reclaim(self, owner: int, blocks: int) -> None:
        """A prefix-cache hit: take ``blocks`` of the owner's cached blocks back out of the free queue."""
        if owner not in self.segment:
            return
        if self.pending_evictions or self.deque_evictions:
            self.flush()
        seg = self.segment.pop(owner, None)
        if seg is None:
            return
        self.num_free_blocks -= blocks
        seg[1] -= blocks
        seg[0] = -1  # any uncovered rest stays free, anonymous

    def admit(self, request: int, num_tokens: int, token_budget: int, block_size: int) -> tuple[int, int, int]:
        """Schedule one waiting request (vLLM's waiting pass for one request): look up its prefix-cache hit (whole
        blocks, at most ``num_tokens − 1`` tokens), chunk the rest to ``token_budget``, and ``allocate_slots`` with
        the full sequence required free (``full_sequence_fits``). Returns (hit tokens, scheduled tokens, blocks
        held), or (0, 0, 0) when it cannot be admitted (admission stops there). The decode window and the general
        step both call it, once per request admitted; its arithmetic is ``engine.sim.rules.admission``, which the
        compiled loop calls too."""
        if request in self.segment:  # a preempted request's full blocks may still be cached: its hit
            hit_blocks, chunk, blocks = admission(
                num_tokens, self.cached(request), token_budget, block_size, self.num_free_blocks
            )
            if chunk:
                self.reclaim(request, hit_blocks)
        else:
            hit_blocks, chunk, blocks = admission(num_tokens, 0, token_budget, block_size, self.num_free_blocks)
        self.num_free_blocks -= blocks - hit_blocks
        self.pending_evictions += blocks - hit_blocks
        return hit_blocks * block_size, chunk, blocks

    def segments(self) -> list[list[int]]:
        """The queue as [owner, blocks] segments, front first, evictions applied (the compiled loop's layout)."""
        self.flush()
        front = [[-1, self.front_unhashed]] if self.front_unhashed else []
        return front + list(self.fifo)

    def set_segments(self, segments: list[list[int]], pending_evictions: int) -> None:
        """Take the queue back from the compiled loop's layout (its own allocations not yet evicted pending)."""
        self.front_unhashed = 0
        self.deque_evictions = 0
        self.pending_evictions = pending_evictions
        self.fifo = deque(segments)
        self.segment = {seg[0]: seg for seg in segments if seg[0] >= 0}
