"""Parity: cliffscope's reference scheduler (``engine.sim.reference``) held to vLLM's real V1 ``Scheduler``.

vLLM's scheduler runs without a model: requests go in, ``schedule()`` says who runs with how many tokens, and a
synthetic ``ModelRunnerOutput`` answers (one sampled token per request whose prefill is complete, nothing for a
prefill chunk) through ``update_from_output``. Both schedulers get the same requests (token ids unique per request,
so prefix-cache hits are a request's own blocks from before its preemption), block size, pool, limits and arrival
steps; every step's scheduled (id, tokens), preempted and finished ids are compared. vLLM is imported only here
(and only when called): the dashboard never needs it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from engine.sim.reference import Request, Scheduler, SchedulerConfig, StepRecord

VLLM_VERSION = "0.32.0"  # the vLLM whose scheduler the reference is held to (``python -m engine parity`` checks)
TINY_MODEL = Path(__file__).resolve().parents[2] / "data" / "models" / "tiny-llama-4l"
MAX_MODEL_LEN = 4096  # the tiny model's max_position_embeddings: a request's prompt + output stay below it
MAX_STEPS = 100_000


@dataclass(frozen=True)
class WorkloadRequest:
    num_prompt_tokens: int
    max_tokens: int
    arrival_step: int = 0  # added before this step's schedule()


@dataclass(frozen=True)
class Workload:
    requests: tuple[WorkloadRequest, ...]
    config: SchedulerConfig

    def check(self) -> None:
        """Refuse a workload vLLM could never finish (a request longer than the pool or the model)."""
        pool_tokens = (self.config.num_gpu_blocks - 1) * self.config.block_size
        if self.config.max_num_seqs > self.config.max_num_batched_tokens:
            raise ValueError("max_num_seqs must not exceed max_num_batched_tokens (vLLM's SchedulerConfig refuses it)")
        for i, r in enumerate(self.requests):
            total = r.num_prompt_tokens + r.max_tokens
            if r.num_prompt_tokens < 1 or r.max_tokens < 1:
                raise ValueError(f"request {i}: num_prompt_tokens and max_tokens must be ≥ 1")
            if total >= MAX_MODEL_LEN or total > pool_tokens:
                raise ValueError(
                    f"request {i}: {total} tokens exceed the pool ({pool_tokens}) or max_model_len ({MAX_MODEL_LEN})"
                )


@dataclass(frozen=True)
class Mismatch:
    step: int
    reference: StepRecord | None  # None: that scheduler had already finished
    vllm: StepRecord | None


@dataclass(frozen=True)
class Comparison:
    steps: int
    mismatched_steps: int
    first_mismatch: Mismatch | None
    preemptions: int  # vLLM's, over the run
    # cliffscope's fast simulator gives the reference's finish steps and preemptions (None: a config it does not
    # model, a watermark or the full-sequence gate off)
    fast_matches: bool | None


def _drive(workload: Workload, add: Any, step: Any, busy: Any) -> list[StepRecord]:
    """Feed arrivals step by step and collect records until every request has finished."""
    pending = sorted(enumerate(workload.requests), key=lambda x: x[1].arrival_step)
    records: list[StepRecord] = []
    k = 0
    while k < len(pending) or busy():
        while k < len(pending) and pending[k][1].arrival_step <= len(records):
            add(*pending[k])
            k += 1
        records.append(step())
        if len(records) > MAX_STEPS:
            raise RuntimeError("parity run exceeded its step limit")
    return records


def run_reference(workload: Workload) -> list[StepRecord]:
    scheduler = Scheduler(workload.config)

    def add(i: int, r: WorkloadRequest) -> None:
        scheduler.add_request(Request(i, r.num_prompt_tokens, r.max_tokens))

    return _drive(workload, add, scheduler.step, scheduler.has_requests)


class VllmScheduler:
    """vLLM's own V1 scheduler for a workload's limits, driven without a model."""

    def __init__(self, config: SchedulerConfig) -> None:
        from vllm.config import CacheConfig, VllmConfig
        from vllm.config import SchedulerConfig as VllmSchedulerConfig
        from vllm.utils.hashing import sha256
        from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
        from vllm.v1.core.sched.scheduler import Scheduler as V1Scheduler
        from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
        from vllm.v1.structured_output import StructuredOutputManager

        model_config = _model_config()
        cache_config = CacheConfig(block_size=config.block_size, enable_prefix_caching=config.enable_prefix_caching)
        cache_config.num_gpu_blocks = config.num_gpu_blocks
        scheduler_config = VllmSchedulerConfig(
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            max_model_len=MAX_MODEL_LEN,
            enable_chunked_prefill=True,
            is_encoder_decoder=False,
            watermark=config.watermark,
            scheduler_reserve_full_isl=config.scheduler_reserve_full_isl,
        )
        vllm_config = VllmConfig(
            model_config=model_config, scheduler_config=scheduler_config, cache_config=cache_config
        )
        spec = FullAttentionSpec(block_size=config.block_size, num_kv_heads=2, head_size=64, dtype=_dtype())
        kv_cache_config = KVCacheConfig(
            num_blocks=config.num_gpu_blocks,
            kv_cache_tensors=[],
            kv_cache_groups=[KVCacheGroupSpec(["layers.0.self_attn"], spec)],
        )
        self.scheduler = V1Scheduler(
            vllm_config=vllm_config,
            kv_cache_config=kv_cache_config,
            structured_output_manager=StructuredOutputManager(vllm_config),
            block_size=config.block_size,
            log_stats=False,
        )
        init_none_hash(sha256)
        self._hasher = get_request_block_hasher(config.block_size, sha256)
        self._max_tokens: dict[str, int] = {}

    def add(self, i: int, r: WorkloadRequest) -> None:
        from vllm.sampling_params import SamplingParams
        from vllm.v1.request import Request as V1Request

        # Token ids unique to the request: its first token is its index (ids past the tiny model's vocab are
        # never looked up here).
        prompt = [i + 3] + [(i * 7919 + k) % 4000 + 3 for k in range(1, r.num_prompt_tokens)]
        params = SamplingParams(max_tokens=r.max_tokens, ignore_eos=True, detokenize=False)
        request = V1Request(str(i), prompt, params, None, arrival_time=0.0, block_hasher=self._hasher)
        self.scheduler.add_request(request)

    def step(self) -> StepRecord:
        from vllm.v1.outputs import ModelRunnerOutput

        output = self.scheduler.schedule()
        ids = list(output.num_scheduled_tokens)
        sampled = []
        for rid in ids:
            request = self.scheduler.requests[rid]
            done_prefill = request.num_computed_tokens >= request.num_tokens
            sampled.append([int(rid) % 4000 + 5] if done_prefill else [])
        runner_output = ModelRunnerOutput(
            req_ids=ids, req_id_to_index={r: k for k, r in enumerate(ids)}, sampled_token_ids=sampled
        )
        engine_outputs = self.scheduler.update_from_output(output, runner_output)
        finished = sorted(int(o.request_id) for eo in engine_outputs.values() for o in eo.outputs if o.finished)
        return StepRecord(
            tuple((int(r), n) for r, n in output.num_scheduled_tokens.items()),
            tuple(int(r) for r in _preempted_ids(output)),
            tuple(finished),
        )

    def busy(self) -> bool:
        return self.scheduler.get_num_unfinished_requests() > 0


def _preempted_ids(output: Any) -> list[str]:
    ids = getattr(output, "preempted_req_ids", None)
    return sorted(ids or [], key=int)


_MODEL_CONFIG: Any = None


def _model_config() -> Any:
    """One ModelConfig per process (building it reads the tiny model's config.json through transformers)."""
    global _MODEL_CONFIG
    if _MODEL_CONFIG is None:
        from vllm.config import ModelConfig

        _MODEL_CONFIG = ModelConfig(
            model=str(TINY_MODEL), skip_tokenizer_init=True, max_model_len=MAX_MODEL_LEN, dtype="float32"
        )
    return _MODEL_CONFIG


def _dtype() -> Any:
    import torch

    return torch.float32


def run_vllm(workload: Workload) -> list[StepRecord]:
    vllm = VllmScheduler(workload.config)
    return _drive(workload, vllm.add, vllm.step, vllm.busy)


def compare(workload: Workload) -> Comparison:
    workload.check()
    ours, theirs = run_reference(workload), run_vllm(workload)
    first = None
    mismatched = 0
    for k in range(max(len(ours), len(theirs))):
        a = ours[k] if k < len(ours) else None
        b = theirs[k] if k < len(theirs) else None
        if a != b:
            mismatched += 1
            if first is None:
                first = Mismatch(k, a, b)
    fast_matches = None
    if fast_simulates(workload.config):
        fast_matches = run_fast(workload) == reference_outcome(workload, ours)
    return Comparison(len(theirs), mismatched, first, sum(len(r.preempted) for r in theirs), fast_matches)


def installed_vllm_version() -> str:
    import vllm

    return str(vllm.__version__)


def draw_workload(rng: random.Random, max_requests: int = 24, max_tokens: int = 200) -> Workload:
    """One workload from the ranges the property tests draw from (through Hypothesis's ``randoms()``) and the
    command draws from: pools from ample to starved (the longest request plus 0 blocks to 20× its size), budgets
    from 16 tokens (long chunked prefills) to 2,048, max_num_seqs 1 to 64, arrivals at step 0 or spread over 60
    steps, prefix caching on or off, and in 3 of 10 workloads 400–1,000-token prompts (long chunked prefills)."""
    block_size = rng.choice([16, 32])
    n = rng.randint(1, max_requests)
    long_prompts = rng.random() < 0.3
    reqs = tuple(
        WorkloadRequest(
            rng.randint(400, 1000) if long_prompts else rng.randint(1, 300),
            rng.randint(1, max_tokens),
            rng.choice([0, 0, rng.randint(0, 60)]),
        )
        for _ in range(n)
    )
    longest = max(r.num_prompt_tokens + r.max_tokens for r in reqs)
    need = -(-longest // block_size)
    num_gpu_blocks = 1 + need + rng.choice([0, 1, 3, need // 2, need, 4 * need, 20 * need])
    budget = rng.choice([16, 64, 256, 512, 2048])
    config = SchedulerConfig(
        max_num_seqs=min(rng.choice([1, 2, 4, 8, 64]), budget),  # vLLM refuses max_num_seqs > the token budget
        max_num_batched_tokens=budget,
        block_size=block_size,
        num_gpu_blocks=num_gpu_blocks,
        enable_prefix_caching=rng.random() < 0.7,
    )
    return Workload(reqs, config)


def draw_workloads(count: int, seed: int) -> Iterator[Workload]:
    rng = random.Random(seed)
    for _ in range(count):
        yield draw_workload(rng)


def mismatch_dict(m: Mismatch | None) -> dict[str, Any] | None:
    return None if m is None else asdict(m)


@dataclass(frozen=True)
class Outcome:
    """What cliffscope's fast simulator reports of a run, in steps: comparable with the reference's records."""

    steps: int
    finished_step: tuple[int, ...]  # per request: the step (1-based) whose output finished it
    num_preemptions: tuple[int, ...]


def reference_outcome(workload: Workload, records: list[StepRecord]) -> Outcome:
    n = len(workload.requests)
    finished, preempted = [0] * n, [0] * n
    for k, record in enumerate(records):
        for i in record.finished:
            finished[i] = k + 1
        for i in record.preempted:
            preempted[i] += 1
    return Outcome(len(records), tuple(finished), tuple(preempted))


def fast_simulates(config: SchedulerConfig) -> bool:
    """Whether cliffscope's fast simulator models these settings (vLLM's defaults for the two it leaves out; V0's
    scheduler, chunked prefill off, keeps its block manager's watermark)."""
    return (config.watermark == 0 or not config.enable_chunked_prefill) and config.scheduler_reserve_full_isl


def draw_v0_workload(rng: random.Random, max_requests: int = 24, max_tokens: int = 200) -> Workload:
    """A workload for vLLM V0's scheduler without chunked prefill: ``draw_workload``'s requests and pools, prefix
    caching off (V0's default), a budget that takes the longest request whole (``max(max_model_len, 2048)`` in V0,
    or at most 3 of them), and V0's 1 % watermark or a larger one."""
    w = draw_workload(rng, max_requests, max_tokens)
    longest = max(r.num_prompt_tokens + r.max_tokens for r in w.requests)
    budget = rng.choice([longest, 2 * longest, 3 * longest, max(longest, 2048)])
    watermark = rng.choice([0.0, 0.01, 0.05])
    # The longest request must fit the pool above the watermark, else V0 drops it (FINISHED_IGNORED).
    need = 1 + -(-longest // w.config.block_size)
    blocks = max(w.config.num_gpu_blocks, math.ceil(need / (1 - watermark)) + 1)
    config = replace(
        w.config,
        max_num_batched_tokens=budget,
        max_num_seqs=min(w.config.max_num_seqs, budget),
        num_gpu_blocks=blocks,
        enable_prefix_caching=False,
        enable_chunked_prefill=False,
        watermark=watermark,
    )
    return Workload(w.requests, config)


def run_fast(workload: Workload) -> Outcome:
    """cliffscope's fast simulator (``engine.sim.replica``; ``engine.sim.config``
    selects the path)
    on the workload, one replica, arrivals on whole steps."""
    import numpy as np

    from engine.sim.replica import ReplicaConfig, simulate_replica, unit_step_cost
    from engine.sim.state import BusyTotals, TracePoints

    c = workload.config
    if not fast_simulates(c):
        raise ValueError("the fast simulator follows vLLM's defaults: watermark 0, scheduler_reserve_full_isl on")
    isl = np.array([r.num_prompt_tokens for r in workload.requests], dtype=np.int64)
    osl = np.array([r.max_tokens for r in workload.requests], dtype=np.int64)
    arrival = np.array([float(r.arrival_step) for r in workload.requests])
    blocks = c.num_gpu_blocks - 1  # cliffscope counts usable blocks: vLLM's less the null block
    cfg = ReplicaConfig(
        blocks, c.block_size, c.max_num_seqs, c.max_num_batched_tokens, c.enable_prefix_caching,
        c.enable_chunked_prefill, int(c.watermark * c.num_gpu_blocks),
    )  # fmt: skip
    out = simulate_replica(isl, osl, arrival, unit_step_cost, cfg, TracePoints(), BusyTotals())
    finished = out.finished_s
    return Outcome(
        round(float(np.nanmax(finished))) if len(finished) else 0,
        tuple(round(float(x)) for x in finished),
        tuple(int(x) for x in out.num_preemptions),
    )
