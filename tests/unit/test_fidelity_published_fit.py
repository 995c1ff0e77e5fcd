"""Published records as fitter cases: flags stated vs vLLM's defaults, output lengths per model family, the
physical floor, and leave-one-case-out fits that never see the case they score (real records, real engine)."""

from __future__ import annotations

import math

import pytest

from engine.fidelity.calibrate import PARAM_BOUNDS, Evaluator, fit
from engine.fidelity.published_fit import (
    OUTPUT_LENGTHS,
    floor_calibration,
    load_records,
    output_lengths_of,
    paper_case,
    paper_report,
    physical_floor,
    reachable,
)


@pytest.fixture(scope="module")
def paper() -> dict:
    return {r.id: r for r in load_records(kind="paper")}


def test_output_lengths_are_stated_per_family_with_their_source() -> None:
    assert output_lengths_of("DeepSeek-R1-Distill-Qwen-32B").reasoning_model
    assert output_lengths_of("DeepSeek-R1").reasoning_model
    llama = output_lengths_of("Llama-3.1-405B")
    assert not llama.reasoning_model and "NOT a reasoning model" in llama.source and "assumption" in llama.source
    assert all("§III" in entry.source for entry in OUTPUT_LENGTHS.values())
    with pytest.raises(ValueError, match="OUTPUT_LENGTHS"):
        output_lengths_of("Mistral-7B")  # no statement: an error, never a silent reasoning profile


def test_a_paper_record_keeps_its_stated_flags_and_lists_the_defaults_it_took(paper: dict) -> None:
    case = paper_case(paper["paper-v-b-32b-dp4-tp2"])
    s = case.scenario
    assert (s.dp, s.tp, s.pp, s.gpus, s.gpu, s.num_requests) == (4, 2, 1, 8, "H200", 2000)
    assert s.block_size == 16 and "block_size" not in case.defaults  # stated by the paper
    assert case.defaults["max_num_seqs"] == 1024 == s.max_num_seqs  # vLLM's default on an H200 (vllm_rules)
    assert case.measured == {"completion_s": 484.0} and case.case == "32B" and case.group == ("H200", "published V1")
    assert "arxiv.org/abs/2605.19775" in case.source and len(case.lengths) == 2000


def test_the_physical_floor_bounds_every_fit_from_below(paper: dict) -> None:
    floor = floor_calibration()
    assert floor.mem_efficiency == floor.compute_efficiency == floor.link_efficiency == 1.0
    case = paper_case(paper["paper-v-b-14b-dp8"])
    ev = Evaluator(case)
    low = physical_floor(case, ev)["completion_s"]
    assert low < ev.figures(floor_calibration().__class__())["completion_s"]  # defaults are slower than the floor
    ok, why = reachable(case, {"completion_s": low})
    assert ok and not why
    too_fast = reachable(case, {"completion_s": 2 * case.measured["completion_s"]})
    assert not too_fast[0] and "physical floor" in too_fast[1][0]


def test_a_gpu_fit_stays_inside_its_bounds_and_reports_uncertainty(paper: dict) -> None:
    cases = [paper_case(paper[r]) for r in ("paper-v-b-32b-dp8", "paper-v-b-32b-tp8", "paper-v-b-32b-dp4-tp2")]
    result = fit(cases, params=["mem_efficiency", "step_overhead_s"], max_evals=60)
    for name, value in result.fitted.items():
        low, high = PARAM_BOUNDS[name]
        assert low <= value <= high
        assert name in result.uncertainty
    assert result.loss <= result.loss_start


def test_leave_one_case_out_never_fits_on_the_case_it_scores(paper: dict) -> None:
    ids = ["paper-v-b-14b-dp8", "paper-v-b-14b-pp2-tp4", "paper-v-b-32b-dp4-tp2", "paper-v-b-32b-tp8"]
    report = paper_report([paper[i] for i in ids], max_evals=30)
    assert {r["case"] for r in report["rows"]} == {"14B", "32B"}
    for row in report["rows"]:
        assert row["train_records"] and not any(row["case"].lower() in t for t in row["train_records"])
        assert row["case"] not in row["train_cases"]
        assert row["predicted_s"] > 0 and math.isclose(
            row["err"], (row["predicted_s"] - row["published_s"]) / row["published_s"]
        )
    assert report["order"]["14B"]["published"][0] == "DP8·TP1·PP1"
    assert report["summary"]["n"] == 4 and report["summary"]["median"] <= report["summary"]["mean"] * 10


def test_a_pp_record_takes_the_tuned_budget_and_r1_pp4_tp2_is_within_physics(paper: dict) -> None:
    """The paper tuned max_num_batched_tokens (value unstated): a PP record takes the fastest of TUNED_BUDGETS at
    the defaults, says so in its defaults, and DeepSeek-R1 PP=4×TP=2's 1,663 s is then above its physical floor
    (it was 0.94× of a floor computed with one 8,192-token micro-batch per round)."""
    from engine.fidelity.published_fit import TUNED_BUDGETS

    case = paper_case(paper["paper-v-c-r1-pp4-tp2"])
    assert case.scenario.max_num_batched_tokens in TUNED_BUDGETS
    assert str(case.defaults["max_num_batched_tokens"]).startswith(f"{case.scenario.max_num_batched_tokens} (tuned")
    floor = physical_floor(case)["completion_s"]
    assert floor < case.measured["completion_s"]
    tp8 = paper_case(paper["paper-v-c-r1-tp8"])  # no PP: the budget does not make micro-batches, stays default
    assert tp8.scenario.max_num_batched_tokens == 8192  # vLLM's default on an H200 through the OpenAI server


def test_degree_folds_hold_out_whole_tp_pp_degrees(paper: dict) -> None:
    from engine.fidelity.calibrate import cross_validate, degree_of

    ids = ["paper-v-b-32b-dp8", "paper-v-b-32b-dp4-tp2", "paper-v-b-32b-tp8", "paper-v-a-32b-tp1"]
    cases = [paper_case(paper[i]) for i in ids]
    assert [degree_of(c) for c in cases] == ["TP1·PP1", "TP2·PP1", "TP8·PP1", "TP1·PP1"]
    held = cross_validate(cases, max_evals=12, fold_by=degree_of, scored={"paper-v-b-32b-tp8"})
    tp8 = held["paper-v-b-32b-tp8"]
    assert tp8.fit is not None and sorted(tp8.train_run_ids) == sorted(set(ids) - {"paper-v-b-32b-tp8"})
    assert "TP/PP degree" in tp8.calibration.source
    assert "paper-v-b-32b-dp8" not in held  # its fold holds no scored record: not fitted
