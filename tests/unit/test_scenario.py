from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.scenario import (
    DEFAULT,
    FIELD_RANGES,
    Scenario,
    ScenarioError,
    scenario_from_params,
    scenario_to_params,
    valid_layouts,
    validate_scenario,
)


def test_defaults_encode_to_version_only() -> None:
    assert scenario_to_params(Scenario()) == {"v": "1"}


def test_round_trip() -> None:
    s = Scenario(model="DeepSeek-R1-Distill-Qwen-32B", gpus=8, dp=4, tp=2, arrival_rate=2.5, max_model_len=32768)
    decoded, notices = scenario_from_params(scenario_to_params(s))
    assert decoded == s and notices == []


@settings(max_examples=60, deadline=None)
@given(
    tp=st.sampled_from([1, 2, 4, 8]),
    util=st.floats(0.05, 0.99),
    seqs=st.integers(1, 16384),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_property(tp: int, util: float, seqs: int, seed: int) -> None:
    s = Scenario(tp=tp, gpus=tp, gpu_memory_utilization=util, max_num_seqs=seqs, seed=seed)
    decoded, notices = scenario_from_params(scenario_to_params(s))
    assert notices == []
    assert decoded.tp == tp and decoded.max_num_seqs == seqs and decoded.seed == seed
    assert decoded.gpu_memory_utilization == pytest.approx(util, rel=1e-5)


def test_bad_values_reset_with_notices_never_raise() -> None:
    s, notices = scenario_from_params(
        {"model": "no-such", "tp": "x", "gpu_memory_utilization": "2", "zz": "1", "block_size": "17", "v": "1"}
    )
    assert s == DEFAULT
    text = " ".join(notices)
    for word in ("no-such", "tp", "gpu_memory_utilization", "zz", "block_size"):
        assert word in text


def test_old_and_newer_links() -> None:
    s, notices = scenario_from_params({"model": "32b"})
    assert s.model == "DeepSeek-R1-Distill-Qwen-32B" and "version 0" in notices[0]
    _, notices = scenario_from_params({"v": "99"})
    assert "newer" in notices[0]


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=6))
@settings(max_examples=100, deadline=None)
def test_decoder_never_raises(params: dict[str, str]) -> None:
    s, _ = scenario_from_params(params)
    assert isinstance(s, Scenario)


def test_validate_names_the_field() -> None:
    with pytest.raises(ScenarioError, match=r"^tp"):
        validate_scenario(replace(DEFAULT, tp=0))
    with pytest.raises(ScenarioError, match=r"^gpus"):
        validate_scenario(Scenario(gpus=8, dp=2, tp=2))
    with pytest.raises(ScenarioError, match=r"^model"):
        validate_scenario(Scenario(model="nope"))
    with pytest.raises(ScenarioError, match=r"^peer_to_peer: .*pcie_bytes_per_s"):  # no PCIe figure for B200
        validate_scenario(Scenario(gpu="B200", gpus=2, tp=2, peer_to_peer=False))
    assert validate_scenario(Scenario(tp=2)).gpus == 2


def test_ranges_and_layouts() -> None:
    assert FIELD_RANGES["gpu_memory_utilization"]["max"] < 1
    layouts = valid_layouts(8)
    assert (8, 1, 1) in layouts and (1, 8, 1) in layouts and (1, 2, 4) in layouts and len(layouts) == 10
    assert all(d * t * p == 8 for d, t, p in layouts)
    assert valid_layouts(16, gpus_per_node=8).count((1, 16, 1)) == 0
