"""vLLM V1's scheduler, written out plainly: the specification cliffscope's fast simulator is tested against.

It follows ``vllm.v1.core.sched.scheduler.Scheduler.schedule`` and ``KVCacheManager.allocate_slots`` (vLLM 0.32.0,
see ``engine.sim.parity.VLLM_VERSION``) for a decoder-only model with full attention, one KV cache group, no
speculative decoding, no KV connector, FCFS policy, chunked prefill on (V1's default), and the same names:

- ``schedule()`` serves the ``running`` queue first, in order, under one token budget (``max_num_batched_tokens``):
  each request asks for ``num_tokens - num_computed_tokens`` tokens (1 when decoding; the rest of its prompt,
  chunked to the budget left, when prefilling). ``allocate_slots`` returning None preempts the last running request
  (lowest priority under FCFS) and retries; when the request itself was the last, it is preempted and the running
  pass stops. A preempted request frees its blocks, forgets its progress (recompute) and goes to the FRONT of
  ``waiting``.
- Only in a step without preemption, ``waiting`` requests are admitted while the budget lasts and fewer than
  ``max_num_seqs`` run. Admission looks up the prefix cache (at most ``num_tokens - 1`` tokens, whole blocks), then
  asks ``allocate_slots`` with ``full_sequence_must_fit`` (vLLM's ``scheduler_reserve_full_isl``, on by default):
  blocks for ALL the request's tokens — not only its first chunk — must be free, plus the watermark
  (``watermark × num_gpu_blocks``, 0 by default) once anything runs. The first failure stops admission.
- The block pool keeps free blocks in a queue: allocation takes from the front; a freed request gives its blocks
  back last block first, full (hashed) blocks to the back and the partial last block to the front; block 0 is the
  null block, never handed out. A prefix-cache hit takes its blocks back out of the queue.
- A request whose computed tokens reach its token count samples one token per step; it finishes at ``max_tokens``
  and frees its blocks after the step.

Request token ids are unique per request here, so a hit is always a request's own blocks from before a preemption.
Slow on purpose (a block is an object); cliffscope's fast paths (``engine.simulate``) must give the same steps.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import Enum


class RequestStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


@dataclass
class Request:
    request_id: int
    num_prompt_tokens: int
    max_tokens: int
    num_computed_tokens: int = 0
    num_output_tokens: int = 0
    status: RequestStatus = RequestStatus.WAITING
    num_preemptions: int = 0

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens: what a (re)prefill must compute, as vLLM's ``Request.num_tokens``."""
        return self.num_prompt_tokens + self.num_output_tokens


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    num_gpu_blocks: int  # as vLLM counts them: the null block included
    enable_prefix_caching: bool = True
    watermark: float = 0.0
    scheduler_reserve_full_isl: bool = True
    # False: vLLM V0's ``Scheduler._schedule_default`` without chunked prefill (``Scheduler._schedule_v0``).
    enable_chunked_prefill: bool = True


@dataclass(frozen=True)
class StepRecord:
    """One ``schedule()`` and its output: who ran with how many tokens, who was preempted, who finished."""

    scheduled: tuple[tuple[int, int], ...]  # (request_id, num_scheduled_tokens), in scheduling order
    preempted: tuple[int, ...]  # sorted (vLLM reports them as a set)
    finished: tuple[int, ...]  # sorted


@dataclass(eq=False)
class KVCacheBlock:
    block_id: int
    ref_cnt: int = 0
    block_hash: tuple[int, int] | None = None  # (request_id, block index): token ids are unique per request


class BlockPool:
    """The free block queue (an ordered dict: pop the front, append or prepend, remove from the middle) and the
    map of hashed blocks that prefix-cache lookups read."""

    def __init__(self, num_gpu_blocks: int, enable_caching: bool) -> None:
        self.enable_caching = enable_caching
        blocks = [KVCacheBlock(i) for i in range(num_gpu_blocks)]
        self.free_block_queue: OrderedDict[int, KVCacheBlock] = OrderedDict((b.block_id, b) for b in blocks)
        self.null_block = self.free_block_queue.popitem(last=False)[1]  # block 0, reserved
        self.cached_block_hash_to_block: dict[tuple[int, int], KVCacheBlock] = {}

    def get_num_free_blocks(self) -> int:
        return len(self.free_block_queue)

    def get_new_blocks(self, n: int) -> list[KVCacheBlock]:
        out = []
        for _ in range(n):
            block = self.free_block_queue.popitem(last=False)[1]
            if block.block_hash is not None:  # evicted from the prefix cache
                del self.cached_block_hash_to_block[block.block_hash]
                block.block_hash = None
            block.ref_cnt = 1
            out.append(block)
        return out

    def touch(self, blocks: list[KVCacheBlock]) -> None:
        for block in blocks:
            if block.ref_cnt == 0:
                del self.free_block_queue[block.block_id]
            block.ref_cnt += 1

    def free_blocks(self, ordered_blocks: list[KVCacheBlock]) -> None:
        """``ordered_blocks`` first-to-evict first: hashed ones join the back (LRU), the rest the front."""
        evict_first, evict_last = [], []
        for block in ordered_blocks:
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                cached = block.block_hash is not None and self.enable_caching
                (evict_last if cached else evict_first).append(block)
        for block in reversed(evict_first):
            self.free_block_queue[block.block_id] = block
            self.free_block_queue.move_to_end(block.block_id, last=False)
        for block in evict_last:
            self.free_block_queue[block.block_id] = block


class KVCacheManager:
    def __init__(self, config: SchedulerConfig) -> None:
        self.block_size = config.block_size
        self.enable_caching = config.enable_prefix_caching
        self.block_pool = BlockPool(config.num_gpu_blocks, config.enable_prefix_caching)
        self.watermark_blocks = int(config.watermark * config.num_gpu_blocks)
        self.req_to_blocks: dict[int, list[KVCacheBlock]] = {}

    def get_computed_blocks(self, request: Request) -> tuple[list[KVCacheBlock], int]:
        """The longest run of the request's own blocks still cached, from its first; never all its tokens (the
        last one is recomputed to get logits), and whole blocks only."""
        if not self.enable_caching:
            return [], 0
        hits: list[KVCacheBlock] = []
        cached = self.block_pool.cached_block_hash_to_block
        for index in range((request.num_tokens - 1) // self.block_size):
            block = cached.get((request.request_id, index))
            if block is None:
                break
            hits.append(block)
        return hits, len(hits) * self.block_size

    def _blocks_to_allocate(self, request: Request, num_tokens: int, new_computed: list[KVCacheBlock]) -> int:
        """New blocks to cover ``num_tokens``, counting hit blocks that sit in the free queue (touching them takes
        them out of it)."""
        held = len(self.req_to_blocks.get(request.request_id, ()))
        required = -(-num_tokens // self.block_size)
        evictable = sum(1 for b in new_computed if b.ref_cnt == 0)
        return max(required - held - len(new_computed), 0) + evictable

    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        new_computed_blocks: list[KVCacheBlock] | None = None,
        num_new_computed_tokens: int = 0,
        full_sequence_must_fit: bool = False,
        has_scheduled_reqs: bool = True,
    ) -> list[KVCacheBlock] | None:
        new_computed = new_computed_blocks or []
        pool = self.block_pool
        watermark = 0
        if has_scheduled_reqs and request.status in (RequestStatus.WAITING, RequestStatus.PREEMPTED):
            watermark = self.watermark_blocks
        if full_sequence_must_fit:
            need = self._blocks_to_allocate(request, request.num_tokens, new_computed)
            if need + watermark > pool.get_num_free_blocks():
                return None
        num_computed = request.num_computed_tokens + num_new_computed_tokens
        num_tokens_need_slot = num_computed + num_new_tokens
        need = self._blocks_to_allocate(request, num_tokens_need_slot, new_computed)
        if need + watermark > pool.get_num_free_blocks():
            return None
        blocks = self.req_to_blocks.setdefault(request.request_id, [])
        pool.touch(new_computed)
        blocks.extend(new_computed)
        new_blocks = pool.get_new_blocks(-(-num_tokens_need_slot // self.block_size) - len(blocks))
        blocks.extend(new_blocks)
        if self.enable_caching:
            self._cache_full_blocks(request, blocks, min(num_tokens_need_slot, request.num_tokens))
        return new_blocks

    def _cache_full_blocks(self, request: Request, blocks: list[KVCacheBlock], num_tokens: int) -> None:
        cached = self.block_pool.cached_block_hash_to_block
        for index in range(num_tokens // self.block_size):
            block = blocks[index]
            if block.block_hash is None:
                block.block_hash = (request.request_id, index)
                cached[block.block_hash] = block

    def free(self, request: Request) -> None:
        """Blocks go back last first, so a request's tail is evicted before its head."""
        blocks = self.req_to_blocks.pop(request.request_id, [])
        self.block_pool.free_blocks(list(reversed(blocks)))


@dataclass
class Scheduler:
    config: SchedulerConfig
    kv_cache_manager: KVCacheManager = field(init=False)
    waiting: deque[Request] = field(default_factory=deque)
    running: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kv_cache_manager = KVCacheManager(self.config)

    def add_request(self, request: Request) -> None:
        self.waiting.append(request)

    def has_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> tuple[dict[int, int], list[Request]]:
        """One step's decisions: tokens per scheduled request (running first, then admissions) and preemptions."""
        if not self.config.enable_chunked_prefill:
            return self._schedule_v0()
        num_scheduled_tokens: dict[int, int] = {}
        preempted_reqs: list[Request] = []
        token_budget = self.config.max_num_batched_tokens
        req_index = 0
        while req_index < len(self.running) and token_budget > 0:
            request = self.running[req_index]
            num_new_tokens = min(request.num_tokens - request.num_computed_tokens, token_budget)
            while True:
                new_blocks = self.kv_cache_manager.allocate_slots(request, num_new_tokens)
                if new_blocks is not None:
                    break
                preempted_req = self.running.pop()  # the lowest priority under FCFS: the last admitted
                self._preempt_request(preempted_req)
                preempted_reqs.append(preempted_req)
                if preempted_req is request:
                    break
            if new_blocks is None:
                break
            num_scheduled_tokens[request.request_id] = num_new_tokens
            token_budget -= num_new_tokens
            req_index += 1
        if not preempted_reqs:
            token_budget = self._schedule_waiting(num_scheduled_tokens, token_budget)
        for request_id, n in num_scheduled_tokens.items():
            self._request(request_id).num_computed_tokens += n
        return num_scheduled_tokens, preempted_reqs

    def _schedule_v0(self) -> tuple[dict[int, int], list[Request]]:
        """vLLM V0's ``_schedule_default`` with chunked prefill off (vllm/core/scheduler.py, 0.7.3): waiting
        requests first, each with all its tokens (``_schedule_prefills``: stop at the first whose blocks would leave
        fewer than the watermark free — ``can_allocate`` LATER — or that the budget or max_num_seqs, running
        requests counted, cannot take); only when none was scheduled, one token for each running request in order,
        preempting from the tail (``_schedule_running``, recompute). No prefix-cache lookup: V0's default is off."""
        num_scheduled_tokens: dict[int, int] = {}
        pool, cfg = self.kv_cache_manager.block_pool, self.config
        watermark = self.kv_cache_manager.watermark_blocks
        token_budget, num_seqs = cfg.max_num_batched_tokens, len(self.running)
        while self.waiting:
            request = self.waiting[0]
            need = -(-request.num_tokens // cfg.block_size)
            if request.num_tokens > cfg.max_num_batched_tokens or cfg.num_gpu_blocks - 1 - need < watermark:
                raise ValueError(f"request {request.request_id}: {request.num_tokens} tokens vLLM V0 would ignore")
            if pool.get_num_free_blocks() - need < watermark or request.num_tokens > token_budget:
                break
            if num_seqs + 1 > cfg.max_num_seqs:
                break
            self.waiting.popleft()
            request.num_computed_tokens = 0
            self.kv_cache_manager.allocate_slots(request, request.num_tokens)
            self.running.append(request)
            request.status = RequestStatus.RUNNING
            num_scheduled_tokens[request.request_id] = request.num_tokens
            token_budget -= request.num_tokens
            num_seqs += 1
        if num_scheduled_tokens:
            for request_id, n in num_scheduled_tokens.items():
                self._request(request_id).num_computed_tokens += n
            return num_scheduled_tokens, []
        return self._schedule_running_v0()

    def _schedule_running_v0(self) -> tuple[dict[int, int], list[Request]]:
        """V0's ``_schedule_running``: each running request in order gets its next token's slot, the last running
        request preempted (recompute, to the front of ``waiting``) while the slot cannot be had."""
        num_scheduled_tokens: dict[int, int] = {}
        preempted_reqs: list[Request] = []
        req_index = 0
        while req_index < len(self.running):
            request = self.running[req_index]
            new_blocks = self.kv_cache_manager.allocate_slots(request, 1)
            while new_blocks is None:
                preempted_req = self.running.pop()
                self._preempt_request(preempted_req)
                preempted_reqs.append(preempted_req)
                if preempted_req is request:
                    break
                new_blocks = self.kv_cache_manager.allocate_slots(request, 1)
            if new_blocks is None:
                break
            num_scheduled_tokens[request.request_id] = 1
            req_index += 1
        for request_id, n in num_scheduled_tokens.items():
            self._request(request_id).num_computed_tokens += n
        return num_scheduled_tokens, preempted_reqs

    def _schedule_waiting(self, num_scheduled_tokens: dict[int, int], token_budget: int) -> int:
        while self.waiting and token_budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting[0]
            new_computed_blocks, num_computed_tokens = self.kv_cache_manager.get_computed_blocks(request)
            num_new_tokens = min(request.num_tokens - num_computed_tokens, token_budget)
            new_blocks = self.kv_cache_manager.allocate_slots(
                request,
                num_new_tokens,
                new_computed_blocks,
                num_computed_tokens,
                full_sequence_must_fit=self.config.scheduler_reserve_full_isl,
                has_scheduled_reqs=bool(self.running),
            )
            if new_blocks is None:
                break
            self.waiting.popleft()
            self.running.append(request)
            request.status = RequestStatus.RUNNING
            request.num_computed_tokens = num_computed_tokens
            num_scheduled_tokens[request.request_id] = num_new_tokens
            token_budget -= num_new_tokens
        return token_budget

    def _request(self, request_id: int) -> Request:
        return next(r for r in self.running if r.request_id == request_id)

    def _preempt_request(self, request: Request) -> None:
        self.kv_cache_manager.free(request)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.waiting.appendleft(request)

    def update_from_output(self, num_scheduled_tokens: dict[int, int]) -> list[Request]:
        """The model's answer: each scheduled request whose prefill is complete samples one token; those reaching
        ``max_tokens`` finish and free their blocks."""
        finished = []
        for request_id in num_scheduled_tokens:
            request = self._request(request_id)
            if request.num_computed_tokens < request.num_tokens:
                continue  # a chunk of a prefill: nothing sampled yet
            request.num_output_tokens += 1
            if request.num_output_tokens >= request.max_tokens:
                finished.append(request)
        for request in finished:
            self.running.remove(request)
            request.status = RequestStatus.FINISHED
            self.kv_cache_manager.free(request)
        return finished

    def step(self) -> StepRecord:
        num_scheduled_tokens, preempted = self.schedule()
        finished = self.update_from_output(num_scheduled_tokens)
        return StepRecord(
            tuple(num_scheduled_tokens.items()),
            tuple(sorted(r.request_id for r in preempted)),
            tuple(sorted(r.request_id for r in finished)),
        )
