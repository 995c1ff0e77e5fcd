"""Per-step telemetry fed with vLLM's own SchedulerStats/IterationStats, through finalise and into the store.

Replays what vLLM 0.32 hands the collector in a capacity trap on a loaded host: the engine core (its own process)
runs ahead of the frontend, the scheduler's PREEMPTED stamps precede the samples that carry them, and a record call
may move a counter without SchedulerStats, a preemption may be counted by the job's first recorded step, and DP
replicas' timelines are merged. The store's measured preemptions must equal the job's count.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
from vllm.v1.metrics.stats import IterationStats, SchedulerStats

from collectors.job import job_meta, plan_requests
from collectors.recorder import WORK_DIR_NAME, Recorder, ReplicaWriter, finalise
from collectors.replicas import replica_preemption_extras
from collectors.spec import JobSpec
from collectors.telemetry import START_SAMPLE, StepTelemetry

TINY_CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 256, "num_hidden_layers": 4}


def _iteration(prompt_tokens: int, generation_tokens: int, preempted: int) -> IterationStats:
    stats = IterationStats()
    stats.prompt_token_stats.total = prompt_tokens
    stats.num_generation_tokens = generation_tokens
    stats.num_preempted_reqs = preempted
    return stats


def _scheduler(running: int, waiting: int, kv_usage: float) -> SchedulerStats:
    return SchedulerStats(num_running_reqs=running, num_waiting_reqs=waiting, kv_cache_usage=kv_usage)


def test_a_lagging_frontend_and_a_stats_less_record_keep_every_preemption(tmp_path: Path) -> None:
    from engine.store import Store

    job = JobSpec(name="trap", num_requests=4, workload="fixed:32,4")
    plan = plan_requests(job)
    recorder = Recorder(
        tmp_path / WORK_DIR_NAME / job.run_id,
        job_meta(job, TINY_CONFIG, "cpu"),
        [{"request_id": p.request_id, "isl": p.isl, "osl": p.osl, "arrival_s": p.arrival_s} for p in plan],
    )
    # the job started 10 s ago by the monotonic clock: the frontend reads every step's outputs long after the
    # engine core stamped them (t0 + 0.1 ... 0.5)
    t0 = time.monotonic() - 10.0
    telemetry = StepTelemetry(recorder, t0)

    telemetry.on_engine_outputs(t0 + 0.10)  # step 1: every prompt prefilled, the pool full
    telemetry.on_step(_scheduler(4, 0, 1.0), _iteration(128, 4, 0))
    telemetry.on_engine_outputs(t0 + 0.20)  # step 2: the scheduler preempted three requests at 0.15 .. 0.17
    telemetry.on_step(_scheduler(1, 3, 0.5), _iteration(0, 1, 0))
    for t_s in (0.15, 0.16, 0.17):  # their PREEMPTED events reach the frontend once they run again
        telemetry.on_preemption_event(t0 + t_s)
    telemetry.on_engine_outputs(t0 + 0.40)
    telemetry.on_step(_scheduler(4, 0, 1.0), _iteration(96, 4, 3))
    telemetry.on_preemption_event(t0 + 0.45)
    telemetry.on_engine_outputs(t0 + 0.50)  # a record without SchedulerStats that moves the counter
    telemetry.on_step(None, _iteration(32, 1, 1))
    telemetry.on_step(None, None)  # nothing moved: no sample
    for p in plan:
        recorder.request_event(p.request_id, first_token_s=0.1, finished_s=0.6, output_tokens=p.osl)
    recorder.update_meta(collector={"preemptions_counted": telemetry.preemptions_total})
    recorder.close()
    bundle = finalise(recorder.work_dir, tmp_path, "complete")

    samples = pq.read_table(bundle / "engine_samples.parquet").to_pylist()
    # the job's start, then the engine core's stamps, not the frontend's
    assert [s["t_s"] for s in samples] == [0.0, 0.1, 0.2, 0.4, 0.5]
    assert [s["preemptions_total"] for s in samples] == [0, 0, 3, 3, 4]  # re-timed to the scheduler's stamps
    assert telemetry.preemptions_total == 4 and telemetry.steps == 3
    last = samples[-1]  # the stats-less record: the scheduler's last report, the job's totals
    assert (last["running"], last["waiting"], last["kv_usage"]) == (4, 0, 1.0)
    assert (last["prompt_tokens_total"], last["generation_tokens_total"]) == (256, 10)

    with Store(tmp_path / "cliffscope.duckdb") as store:
        store.ingest(bundle)
        summary = store.measured_summary(job.run_id)
    assert summary is not None and summary["preemptions"] == telemetry.preemptions_total
    assert summary["cliff_onset_s"] == 0.2


def test_without_the_engine_cores_stamp_a_sample_is_timed_when_the_frontend_reads_it() -> None:
    class Sink:
        def __init__(self) -> None:
            self.rows: list[tuple[float, int, int, float, int, int, int]] = []

        def engine_sample(self, row: tuple[float, int, int, float, int, int, int]) -> None:
            self.rows.append(row)

        def preemption_event(self, t_s: float) -> None:
            pass

    sink = Sink()
    t0 = time.monotonic()
    telemetry = StepTelemetry(sink, t0)
    telemetry.on_engine_outputs(t0 + 0.5)
    telemetry.on_step(_scheduler(1, 0, 0.25), _iteration(8, 1, 0))
    before = time.monotonic() - t0
    telemetry.on_step(_scheduler(1, 0, 0.25), _iteration(0, 1, 0))  # the stamp is used once, then dropped
    assert sink.rows[0] == START_SAMPLE
    assert sink.rows[1][0] == 0.5 and before <= sink.rows[2][0] <= time.monotonic() - t0 + 1e-6


def test_retiming_needs_events_for_the_jobs_final_count() -> None:
    from collectors.recorder import retime_preemptions

    rows = [[0.1, 4, 0, 1.0, 8, 4, 0], [0.5, 3, 1, 1.0, 8, 9, 1]]
    assert [r[6] for r in retime_preemptions(rows, [0.3])] == [0, 1]
    # the job's counter ended at 2 though its samples hold 1: one event cannot time both, so the counter stays
    assert retime_preemptions(rows, [0.3], counted_total=2) == rows


def test_outputs_stamped_before_the_job_began_are_not_the_jobs() -> None:
    """vLLM's engine core can leave an output of the previous job's last step queued; the next job reads it first."""
    rows: list[tuple[float, ...]] = []

    class Sink:
        def engine_sample(self, row: tuple[float, int, int, float, int, int, int]) -> None:
            rows.append(row)

        def preemption_event(self, t_s: float) -> None:
            rows.append((t_s,))

    t0 = time.monotonic()
    telemetry = StepTelemetry(Sink(), t0)
    telemetry.on_engine_outputs(t0 - 0.5)
    telemetry.on_preemption_event(t0 - 0.6)
    telemetry.on_step(_scheduler(0, 0, 0.0), None)
    telemetry.on_engine_outputs(t0 + 0.1)
    telemetry.on_step(_scheduler(2, 0, 0.125), _iteration(64, 2, 0))
    assert rows == [START_SAMPLE, (0.1, 2, 0, 0.125, 64, 2, 0)]
    assert telemetry.steps == 1 and telemetry.preemption_events == 0


def _plan_rows(job: JobSpec) -> list[dict[str, object]]:
    return [
        {"request_id": p.request_id, "isl": p.isl, "osl": p.osl, "arrival_s": p.arrival_s} for p in plan_requests(job)
    ]


def test_a_preemption_counted_by_the_jobs_first_step_is_kept(tmp_path: Path) -> None:
    """The store counts a run's preemptions as the counter's rise over its samples (max - min); a first sample that
    already counts one would be its own baseline. The timeline opens at t = 0 with the idle engine's zero counters."""
    from engine.store import Store

    job = JobSpec(name="first-step", num_requests=2, workload="fixed:32,4")
    recorder = Recorder(tmp_path / WORK_DIR_NAME / job.run_id, job_meta(job, TINY_CONFIG, "cpu"), _plan_rows(job))
    t0 = time.monotonic() - 5.0
    telemetry = StepTelemetry(recorder, t0)
    telemetry.on_preemption_event(t0 + 0.05)  # the scheduler preempted during the first step
    telemetry.on_engine_outputs(t0 + 0.10)
    telemetry.on_step(_scheduler(1, 1, 1.0), _iteration(64, 2, 1))  # ... and the first record counts it
    telemetry.on_engine_outputs(t0 + 0.20)
    telemetry.on_step(_scheduler(1, 0, 0.5), _iteration(32, 2, 0))
    for p in plan_requests(job):
        recorder.request_event(p.request_id, first_token_s=0.1, finished_s=0.2, output_tokens=p.osl)
    recorder.update_meta(collector={"preemptions_counted": telemetry.preemptions_total})
    recorder.close()
    bundle = finalise(recorder.work_dir, tmp_path, "complete")

    samples = pq.read_table(bundle / "engine_samples.parquet").to_pylist()
    assert [(s["t_s"], s["preemptions_total"], s["prompt_tokens_total"]) for s in samples] == [
        (0.0, 0, 0),
        (0.1, 1, 64),
        (0.2, 1, 96),
    ]
    with Store(tmp_path / "cliffscope.duckdb") as store:
        store.ingest(bundle)
        summary = store.measured_summary(job.run_id)
    assert summary is not None and summary["preemptions"] == telemetry.preemptions_total == 1
    assert summary["cliff_onset_s"] == 0.1


def _replica(work_dir: Path, replica: int, t0: float, steps: list[tuple[float, int, list[float]]]) -> dict[str, object]:
    """Replay one DP replica's steps (engine-core stamp, preemptions counted, PREEMPTED stamps read with it) through
    its StepTelemetry into its ReplicaWriter; returns the ``done`` report the replica sends the pool."""
    writer = ReplicaWriter(work_dir, replica)
    telemetry = StepTelemetry(writer, t0)
    for stamp_s, preempted, event_stamps_s in steps:
        for event_s in event_stamps_s:
            telemetry.on_preemption_event(t0 + event_s)
        telemetry.on_engine_outputs(t0 + stamp_s)
        telemetry.on_step(_scheduler(2, 0, 1.0), _iteration(32, 2, preempted))
    writer.close()
    return {"kind": "done", "error": None, "preemptions": telemetry.preemptions_total, "first_preemption_s": None}


def test_merged_replicas_record_the_summed_counter_and_it_guards_the_retiming(tmp_path: Path) -> None:
    from engine.store import Store

    job = JobSpec(name="dp-first-step", num_requests=4, workload="fixed:32,4")
    t0 = time.monotonic() - 5.0

    def run(name: str, replica_steps: list[list[tuple[float, int, list[float]]]]) -> tuple[Path, dict[str, object]]:
        named = JobSpec(name=name, num_requests=job.num_requests, workload=job.workload)
        recorder = Recorder(
            tmp_path / WORK_DIR_NAME / named.run_id, job_meta(named, TINY_CONFIG, "cpu"), _plan_rows(named)
        )
        recorder.close()
        done = {k: _replica(recorder.work_dir, k, t0, steps) for k, steps in enumerate(replica_steps)}
        extras = replica_preemption_extras(done, times_hooked=True)
        recorder.update_meta(collector=extras)
        return finalise(recorder.work_dir, tmp_path, "complete"), extras

    # replica 0 counts a preemption in its first step; replica 1 two later, their events stamped before the counter
    bundle, extras = run("dp-retimed", [[(0.1, 1, [0.05]), (0.3, 0, [])], [(0.2, 0, [0.25]), (0.4, 2, [0.26])]])
    assert extras["preemptions_counted"] == 3 and extras["replica_preemptions"] == [1, 2]
    samples = pq.read_table(bundle / "engine_samples.parquet").to_pylist()
    assert [s["t_s"] for s in samples] == [0.0, 0.1, 0.2, 0.3, 0.4]  # the replicas' t = 0 samples merged once
    assert [s["preemptions_total"] for s in samples] == [0, 1, 1, 3, 3]  # re-timed: the events account for all 3
    with Store(tmp_path / "cliffscope.duckdb") as store:
        store.ingest(bundle)
        summary = store.measured_summary(bundle.name)
    assert summary is not None and summary["preemptions"] == 3

    # one PREEMPTED event went unseen: two events cannot time three counted preemptions, so vLLM's counter stays
    bundle, extras = run("dp-kept", [[(0.1, 1, [0.05]), (0.3, 0, [])], [(0.2, 0, [0.25]), (0.4, 2, [])]])
    assert extras["preemptions_counted"] == 3
    samples = pq.read_table(bundle / "engine_samples.parquet").to_pylist()
    assert [s["preemptions_total"] for s in samples] == [0, 1, 1, 1, 3]


def test_a_replica_that_died_leaves_the_counted_total_out() -> None:
    """Its last progress report is a lower bound: recording it as the final counter would loosen the guard."""
    done = {
        0: {"kind": "done", "error": None, "preemptions": 4, "first_preemption_s": 1.5},
        1: {"kind": "done", "error": "replica 1 process died", "preemptions": 2, "died": True},
    }
    extras = replica_preemption_extras(done, times_hooked=True)
    assert "preemptions_counted" not in extras
    assert extras["replica_preemptions"] == [4, 2] and extras["first_preemption_s"] == 1.5
    done[1] = {"kind": "done", "error": None, "preemptions": 3, "first_preemption_s": 0.9}
    assert replica_preemption_extras(done, times_hooked=False)["preemptions_counted"] == 7
