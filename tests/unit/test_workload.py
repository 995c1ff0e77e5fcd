import numpy as np
import pytest

from engine.workload import WorkloadError, parse_workload, request_lengths


def test_reasoning_profile_matches_paper_statistics() -> None:
    lengths = request_lengths("reasoning", 100_000, seed=1)
    isl, osl = lengths[:, 0], lengths[:, 1]
    assert 0.74 <= np.mean((isl >= 50) & (isl <= 150)) <= 0.80  # paper: 77 %
    assert np.mean(isl > 300) < 0.02  # paper: very few
    assert 0.42 <= np.mean(osl > 5000) <= 0.48  # paper: 45 %


def test_same_seed_same_list_and_different_seed_differs() -> None:
    a = request_lengths("reasoning", 500, seed=7)
    assert np.array_equal(a, request_lengths("reasoning", 500, seed=7))
    assert not np.array_equal(a, request_lengths("reasoning", 500, seed=8))


def test_fixed_and_scaled_profiles() -> None:
    assert request_lengths("fixed:64,512", 3).tolist() == [[64, 512]] * 3
    small = request_lengths("reasoning:0.1", 2000, seed=0)
    full = request_lengths("reasoning", 2000, seed=0)
    assert np.median(small[:, 1]) < np.median(full[:, 1]) / 5


def test_file_profile(tmp_path) -> None:
    f = tmp_path / "lengths.csv"
    f.write_text("isl,osl\n10,20\n30,40\n")
    assert request_lengths(str(f), 3).tolist() == [[10, 20], [30, 40], [10, 20]]


@pytest.mark.parametrize("spec", ["", "fixed:1", "fixed:a,b", "lognormal:1,2,3", "nope", "reasoning:-1", "x.csv"])
def test_bad_specs_name_the_fix(spec: str) -> None:
    with pytest.raises(WorkloadError):
        parse_workload(spec)


def test_reasoning_output_cap() -> None:
    capped = request_lengths("reasoning", 5000, seed=3)
    assert capped[:, 1].max() == 8192
    long_tail = request_lengths("reasoning:1,32768", 5000, seed=3)
    assert long_tail[:, 1].max() > 8192
    assert np.array_equal(np.minimum(long_tail[:, 1], 8192), capped[:, 1])  # same draw, different cap
    assert request_lengths("reasoning:0.1", 5000, seed=3)[:, 1].max() <= 819
    with pytest.raises(WorkloadError, match="MAX_OSL"):
        parse_workload("reasoning:1,0")
