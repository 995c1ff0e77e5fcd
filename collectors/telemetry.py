"""Per-step engine telemetry from vLLM's own stats: a StatLoggerBase that vLLM calls once per engine step.

vLLM hands every step's SchedulerStats (running, waiting, KV usage) and IterationStats (prompt and generation tokens,
preemptions) to its stat loggers in the calling process, so recording them costs one small write per step and
needs no polling thread. The logger forwards to whatever sink is attached; with no sink it does nothing, which lets
one started engine serve several jobs.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from vllm.v1.metrics.loggers import StatLoggerBase


class EngineSink(Protocol):
    def engine_sample(self, row: tuple[float, int, int, float, int, int, int]) -> None: ...


class StepTelemetry:
    """Cumulative counters of one job, fed per step; the clock is ``time.monotonic`` relative to the job's start."""

    def __init__(self, sink: EngineSink, t0_monotonic: float) -> None:
        self.sink = sink
        self.t0_monotonic = t0_monotonic
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.preemptions_total = 0
        self.peak_kv_usage = 0.0
        self.first_preemption_s: float | None = None
        self.steps = 0

    def on_step(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        t_s = time.monotonic() - self.t0_monotonic
        if iteration_stats is not None:
            self.prompt_tokens_total += int(iteration_stats.num_prompt_tokens)
            self.generation_tokens_total += int(iteration_stats.num_generation_tokens)
            preempted = int(iteration_stats.num_preempted_reqs)
            if preempted and self.first_preemption_s is None:
                self.first_preemption_s = t_s
            self.preemptions_total += preempted
        if scheduler_stats is None:
            return
        self.steps += 1
        kv_usage = float(scheduler_stats.kv_cache_usage)
        self.peak_kv_usage = max(self.peak_kv_usage, kv_usage)
        waiting = int(scheduler_stats.num_waiting_reqs) + int(getattr(scheduler_stats, "num_skipped_waiting_reqs", 0))
        self.sink.engine_sample(
            (
                round(t_s, 6),
                int(scheduler_stats.num_running_reqs),
                waiting,
                round(kv_usage, 6),
                self.prompt_tokens_total,
                self.generation_tokens_total,
                self.preemptions_total,
            )
        )


class CollectorStatLogger(StatLoggerBase):
    """vLLM stat logger that forwards each step to ``CollectorStatLogger.active`` when one is attached."""

    active: StepTelemetry | None = None

    def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
        self.engine_index = engine_index

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        target = CollectorStatLogger.active
        if target is not None:
            target.on_step(scheduler_stats, iteration_stats)

    def log_engine_initialized(self) -> None:
        """Nothing to log: the collector reads the KV capacity from the engine's config after start-up."""
