"""vLLM's free-block queue (``BlockPool``'s ``free_block_queue``) as counts of blocks, and the block arithmetic of
``KVCacheManager.allocate_slots``: the one place the simulator's Python paths take, free and hit blocks."""

from __future__ import annotations

from collections import deque


def cdiv(a: int, b: int) -> int:
    """Ceiling division, as vLLM's ``cdiv``: the blocks ``a`` tokens fill at ``b`` tokens a block."""
    return -(-a // b)


def full_sequence_fits(num_tokens: int, block_size: int, num_free_blocks: int) -> bool:
    """vLLM's admission gate (``scheduler_reserve_full_isl``, on by default in vllm 0.32): a waiting or preempted
    request is admitted only if blocks for ALL its tokens are free, not just for its first chunk (its prefix-cache
    hit blocks sit in the free queue, so they count as free and as needed alike). Without it, chunked prefill
    over-admits long prompts and preempts them again: with 500–1,000-token prompts under a 256–512-token budget, a
    user saw vLLM run 2 requests and never preempt where a first-chunk gate ran 3 and preempted 7–11 times. The gate
    implies the first chunk fits too. ``engine.window_kernel`` applies the same test inline (numba)."""
    return -(-num_tokens // block_size) <= num_free_blocks


class FreePool:
    """vLLM's free-block queue. With prefix caching (v1's default) a preempted request's freed full blocks keep their
    contents (and hashes) until evicted; allocation evicts from the front (least recently freed first, and a
    request's last blocks before its first), so a request re-admitted soon after its preemption finds its prefix
    still cached. A request's partial last block has no hash: vLLM puts it at the FRONT of the queue, to be reused
    first (``BlockPool.free_blocks``; ``engine.sim.reference`` spells it out), and nobody can hit it.

    The queue is a deque of [owner, blocks] segments (owner −1: anonymous), ``segment`` maps an owner to its segment
    still in the queue. Evictions are applied lazily (``pending_evictions``): the queue only ever loses blocks from
    its front and gains them at its back, and never holds fewer than are allocated, so evicting a sum of
    allocations at once leaves it as evicting each in turn would have — as long as nothing looks at a segment in
    between (``cached`` and ``reclaim`` flush first)."""

    __slots__ = ("caching", "fifo", "num_free_blocks", "pending_evictions", "segment")

    def __init__(self, blocks: int, caching: bool) -> None:
        self.num_free_blocks = blocks
        self.caching = caching
        self.fifo: deque[list[int]] = deque([[-1, blocks]])
        self.segment: dict[int, list[int]] = {}  # owner → its segment still in the queue
        self.pending_evictions = 0  # blocks allocated but not yet evicted from the queue

    def allocate(self, k: int) -> None:
        """Hand out ``k`` blocks from the queue's front (evicted lazily)."""
        self.num_free_blocks -= k
        self.pending_evictions += k

    def flush(self) -> None:
        """Evict the pending allocations from the front of the queue."""
        k = self.pending_evictions
        self.pending_evictions = 0
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

    def free(self, owner: int, blocks: int, full: int) -> None:
        """Free a request's ``blocks``, ``full`` of them hashed (computed tokens // block size): those join the back,
        hittable under ``owner`` ≥ 0 (a preemption) or anonymous (−1, a finished request); the rest (its partial
        last block) goes to the front."""
        self.num_free_blocks += blocks
        if not self.caching or blocks <= 0:
            return
        self._prepend_unhashed(blocks - full)
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

    def _prepend_unhashed(self, blocks: int) -> None:
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
        if self.pending_evictions:
            self.flush()
        seg = self.segment.get(owner)
        return seg[1] if seg is not None else 0

    def reclaim(self, owner: int, blocks: int) -> None:
        """A prefix-cache hit: take ``blocks`` of the owner's cached blocks back out of the free queue."""
        if owner not in self.segment:
            return
        if self.pending_evictions:
            self.flush()
        seg = self.segment.pop(owner, None)
        if seg is None:
            return
        self.num_free_blocks -= blocks
        seg[1] -= blocks
        seg[0] = -1  # any uncovered rest stays free, anonymous


def admit(pool: FreePool, request: int, num_tokens: int, token_budget: int, block_size: int) -> tuple[int, int, int]:
    """Schedule one waiting request (vLLM's waiting pass for one request): look up its prefix-cache hit (whole
    blocks, at most ``num_tokens − 1`` tokens), chunk the rest to ``token_budget``, and ``allocate_slots`` with the
    full sequence required free (``full_sequence_fits``). Returns (hit tokens, scheduled tokens, blocks held), or
    (0, 0, 0) when it cannot be admitted (admission stops there)."""
    hit_blocks = min(pool.cached(request), (num_tokens - 1) // block_size)
    hit_tokens = hit_blocks * block_size
    chunk = min(num_tokens - hit_tokens, token_budget)
    if chunk <= 0 or not full_sequence_fits(num_tokens, block_size, pool.num_free_blocks):
        return 0, 0, 0
    blocks = cdiv(hit_tokens + chunk, block_size)
    pool.reclaim(request, hit_blocks)
    pool.allocate(blocks - hit_blocks)
    return hit_tokens, chunk, blocks
