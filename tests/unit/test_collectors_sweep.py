"""Sweep files and presets: every preset parses, expansion is predictable, bad input names the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.job import plan_requests
from collectors.spec import MODELS_DIR, EngineParams, JobSpec, SpecError, job_from_mapping
from collectors.sweep import list_presets, load_sweep, resolve_sweep_path, sweep_from_mapping
from engine.workload import request_lengths

PAPER_MODELS = {
    "DeepSeek-R1-Distill-Llama-8B",
    "DeepSeek-R1-Distill-Qwen-14B",
    "DeepSeek-R1-Distill-Qwen-32B",
    "DeepSeek-R1-Distill-Llama-70B",
    "Llama-3.1-405B",
    "DeepSeek-R1",
}
EXPERIMENTS = {"IV-A", "IV-C", "IV-D", "V-A/V-B", "V-C", "V-D", "VI"}


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_parses_and_validates(name: str) -> None:
    path = resolve_sweep_path(name)
    sweep = load_sweep(path, check_models=False)
    assert sweep.jobs and sweep.title and sweep.experiment
    for job in sweep.jobs:
        model = job.engine.model
        assert (MODELS_DIR / model / "config.json").is_file() or model in PAPER_MODELS, model
        if name.startswith("cpu-"):
            job.validate(check_model=True)  # tiny CPU models ship with the collectors
            assert job.engine.kv_cache_memory_bytes, "CPU runs need an explicit KV pool"
            isl_osl = request_lengths(job.workload, job.num_requests, job.seed)
            assert int(isl_osl.sum(axis=1).max()) <= job.engine.max_model_len
        else:
            assert job.engine.device == "cuda" and job.engine.gpu_memory_utilization


def test_presets_cover_every_paper_experiment_on_gpu_and_cpu() -> None:
    for prefix in ("cpu-", "h200-"):
        seen = {
            load_sweep(resolve_sweep_path(n), check_models=False).experiment
            for n in list_presets()
            if n.startswith(prefix)
        }
        covered = {part for exp in seen for part in exp.replace("/", " ").split()} | seen
        for experiment in EXPERIMENTS:
            parts = experiment.split("/")
            assert any(p in covered for p in parts), f"{prefix} presets miss §{experiment}"


def test_axes_cross_points_and_names_are_stable() -> None:
    data = {
        "sweep": {"name": "s", "experiment": "X"},
        "base": {"model": "tiny-llama-4l", "workload": "fixed:8,16", "kv_cache_memory_bytes": 4 << 20},
        "axes": {"max_num_seqs": [4, 8]},
        "points": [{"label": "a", "num_requests": 8}, {"label": "b", "num_requests": 16}],
    }
    sweep = sweep_from_mapping(data, "t.toml")
    assert [j.name for j in sweep.jobs] == ["s-a-seqs4", "s-a-seqs8", "s-b-seqs4", "s-b-seqs8"]
    assert len({j.run_id for j in sweep.jobs}) == 4
    again = sweep_from_mapping(data, "t.toml")
    assert [j.run_id for j in again.jobs] == [j.run_id for j in sweep.jobs]
    # points a and b share engine parameters per max_num_seqs: two engine starts, not four
    assert [len(jobs) for _, jobs in sweep.engine_groups()] == [2, 2]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sweep": {}}, "needs a name"),
        ({"sweep": {"name": "s"}, "base": {"modle": "x"}}, "unknown key(s) modle"),
        ({"sweep": {"name": "s"}, "axes": {"dp": 2}}, "axis 'dp' must be a non-empty list"),
        ({"sweep": {"name": "s"}, "base": {"dp": 0}}, "dp must be a positive integer"),
        ({"sweep": {"name": "s"}, "base": {"workload": "zipf"}}, "workload"),
        ({"sweep": {"name": "s"}, "base": {"model": "no-such-model"}}, "model 'no-such-model' not found"),
        ({"sweep": {"name": "s"}, "extra": {}}, "unknown table(s) extra"),
        ({"sweep": {"name": "s"}, "axes": {"dp": [1, 1]}}, "same job"),
    ],
)
def test_bad_sweeps_name_the_problem(data: dict, message: str) -> None:
    with pytest.raises(SpecError, match=None) as info:
        sweep_from_mapping(data, "bad.toml")
    assert message in str(info.value)
    assert "bad.toml" in str(info.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[sweep\nname = 1")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_sweep(broken)
    with pytest.raises(SpecError, match="neither a file nor a preset"):
        resolve_sweep_path("no-such-preset")


def test_job_requests_are_the_engines_request_list() -> None:
    job = JobSpec(name="j", num_requests=50, workload="reasoning:0.05", seed=3)
    plan = plan_requests(job)
    expected = request_lengths("reasoning:0.05", 50, 3)
    assert [(p.isl, p.osl) for p in plan] == [tuple(map(int, row)) for row in expected]
    assert all(p.arrival_s == 0 for p in plan)
    poisson = plan_requests(JobSpec(name="j", num_requests=50, workload="fixed:4,4", arrival_rate=10.0))
    arrivals = [p.arrival_s for p in poisson]
    assert arrivals == sorted(arrivals) and arrivals[0] == 0 and 2 < arrivals[-1] < 10
    assert arrivals == [
        p.arrival_s for p in plan_requests(JobSpec(name="j", num_requests=50, workload="fixed:4,4", arrival_rate=10.0))
    ]


def test_run_id_changes_with_any_parameter() -> None:
    a = JobSpec(name="j", engine=EngineParams(max_num_seqs=8))
    b = JobSpec(name="j", engine=EngineParams(max_num_seqs=16))
    assert a.run_id != b.run_id and a.run_id.startswith("j-")
    assert JobSpec(name="j", notes="x").run_id == JobSpec(name="j", notes="y").run_id


def test_job_from_mapping_requires_a_name() -> None:
    with pytest.raises(SpecError, match="needs a name"):
        job_from_mapping({"model": "tiny-llama-4l"}, "here")
