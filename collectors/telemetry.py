"""Per-step engine telemetry from vLLM's own stats: a StatLoggerBase that vLLM calls once per engine step.

vLLM hands every step's SchedulerStats (running, waiting, KV usage) and IterationStats (prompt and generation tokens,
preemptions) to its stat loggers in the calling process, so recording them costs one small write per step and
needs no polling thread. The logger forwards to whatever sink is attached; with no sink it does nothing, which lets
one started engine serve several jobs.

Each sample is timed by the engine core's own stamp of the outputs it came with (``EngineCoreOutputs.timestamp``),
not by when our process got round to reading them. vLLM's engine core runs in its own process and keeps stepping
while the frontend is busy (vllm/v1/engine/core.py ``run_busy_loop``), so under load the frontend reads a step's
outputs late; the scheduler's PREEMPTED stamps are engine-core time too, and retiming the counter with them
(``collectors.recorder.retime_preemptions``) needs both on one clock, or preemptions of later steps land on the
first sample and the store, which counts a run's preemptions as the counter's rise over its samples, loses them.

For the same reason every job's timeline opens with a sample at t = 0 (``START_SAMPLE``): the job starts on an idle
engine with its counters at zero, so the counters' rise over the samples includes what the first recorded step
already counted (a preemption, its prompt and generated tokens) instead of taking that step as the baseline.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from vllm.v1.metrics.loggers import StatLoggerBase

START_SAMPLE: tuple[float, int, int, float, int, int, int] = (0.0, 0, 0, 0.0, 0, 0, 0)  # t0: idle, nothing counted


class EngineSink(Protocol):
    def engine_sample(self, row: tuple[float, int, int, float, int, int, int]) -> None: ...

    def preemption_event(self, t_s: float) -> None: ...


class StepTelemetry:
    """Cumulative counters of one job, fed per step; the clock is ``time.monotonic`` relative to the job's start."""

    def __init__(self, sink: EngineSink, t0_monotonic: float) -> None:
        self.sink = sink
        self.t0_monotonic = t0_monotonic
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.preemptions_total = 0
        self.peak_kv_usage = 0.0
        self.first_preemption_s: float | None = None  # when vLLM's counter first moved
        self.first_preemption_event_s: float | None = None  # when the scheduler first preempted
        self.preemption_events = 0
        self.steps = 0
        self.engine_time_monotonic: float | None = None  # the engine core's stamp of the outputs being recorded
        self._gauges: tuple[int, int, float] = (0, 0, 0.0)  # running, waiting, KV usage: the scheduler's last report
        self._sampled: tuple[int, int, int] = (0, 0, 0)  # the counters as the last sample wrote them
        self._opened = False  # whether START_SAMPLE has been written

    def on_engine_outputs(self, timestamp_monotonic: float) -> None:
        """The engine core's time stamp of the outputs whose stats are recorded next (read by the output hook)."""
        if timestamp_monotonic > 0:
            self.engine_time_monotonic = timestamp_monotonic

    def on_preemption_event(self, timestamp_monotonic: float) -> None:
        """A PREEMPTED event with the scheduler's own time stamp (vLLM reports it only once the request runs again)."""
        if timestamp_monotonic < self.t0_monotonic:
            return  # a preemption from before the job began is not this job's
        t_s = round(timestamp_monotonic - self.t0_monotonic, 6)
        self.preemption_events += 1
        if self.first_preemption_event_s is None or t_s < self.first_preemption_event_s:
            self.first_preemption_event_s = t_s
        self.sink.preemption_event(t_s)

    def on_step(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        """Add one step's counts; write a sample when the scheduler reported its state or any counter moved.

        vLLM 0.32's LLMEngine records only outputs that carry SchedulerStats (vllm/v1/engine/llm_engine.py, step 4),
        but a call without them is still sampled when it moved a counter, with the gauges of the scheduler's last
        report, so the timeline carries every count the job's total has. Outputs the engine core stamped before the
        job began (left in the queue after the previous job's last request finished) are not this job's.
        """
        stamp = self.engine_time_monotonic
        self.engine_time_monotonic = None
        if stamp is not None and stamp < self.t0_monotonic:
            return  # stamped before the job began: the engine's previous work, read only now (not this job's)
        t_s = (stamp if stamp is not None else time.monotonic()) - self.t0_monotonic
        if iteration_stats is not None:
            self.prompt_tokens_total += int(iteration_stats.num_prompt_tokens)
            self.generation_tokens_total += int(iteration_stats.num_generation_tokens)
            preempted = int(iteration_stats.num_preempted_reqs)
            if preempted and self.first_preemption_s is None:
                self.first_preemption_s = t_s
            self.preemptions_total += preempted
        counters = (self.prompt_tokens_total, self.generation_tokens_total, self.preemptions_total)
        if scheduler_stats is not None:
            self.steps += 1
            kv_usage = float(scheduler_stats.kv_cache_usage)
            self.peak_kv_usage = max(self.peak_kv_usage, kv_usage)
            skipped = int(getattr(scheduler_stats, "num_skipped_waiting_reqs", 0))
            waiting = int(scheduler_stats.num_waiting_reqs) + skipped
            self._gauges = (int(scheduler_stats.num_running_reqs), waiting, round(kv_usage, 6))
        elif counters == self._sampled:
            return
        self._sampled = counters
        if not self._opened:
            # The engine was idle when the job began (its requests are added after t0): the counters' baseline.
            self._opened = True
            self.sink.engine_sample(START_SAMPLE)
        self.sink.engine_sample((round(t_s, 6), *self._gauges, *counters))


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


def install_preemption_hook(engine: Any) -> bool:
    """Read the time stamp of every PREEMPTED event as vLLM's frontend receives it.

    vLLM's preemption counter moves only when a preempted request produces output again, which can be seconds after
    the scheduler preempted it; the event itself carries the scheduler's monotonic time. This wraps the frontend's
    ``OutputProcessor.process_outputs`` (vLLM 0.32) to read those stamps first, and the engine core's stamp of the
    outputs (its ``engine_core_timestamp`` argument) that times the step's sample; returns False, changing nothing,
    where that hook point does not exist (samples are then timed when the frontend reads them).
    """
    try:
        from vllm.v1.engine import EngineCoreEventType

        processor = engine.output_processor
        original = processor.process_outputs
    except (ImportError, AttributeError):
        return False
    preempted = EngineCoreEventType.PREEMPTED

    def process_outputs(engine_core_outputs: Any, *args: Any, **kwargs: Any) -> Any:
        target = CollectorStatLogger.active
        if target is not None:
            stamp = kwargs.get("engine_core_timestamp")
            if isinstance(stamp, float):
                target.on_engine_outputs(stamp)
            for output in engine_core_outputs:
                events = output.events
                if events:
                    for event in events:
                        if event.type == preempted:
                            target.on_preemption_event(event.timestamp)
        return original(engine_core_outputs, *args, **kwargs)

    processor.process_outputs = process_outputs
    return True
