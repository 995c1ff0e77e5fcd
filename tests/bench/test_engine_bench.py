"""Performance budgets of the engine (run with `make bench`); medians printed for the closing note."""

import statistics
import time
from collections.abc import Callable

import pytest

from engine.memory import memory_plan
from engine.planner import plan
from engine.scenario import Scenario
from engine.simulate import _predict_cached, predict

pytestmark = pytest.mark.bench


def median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def test_memory_one_layout_under_1ms() -> None:
    median = median_s(lambda: memory_plan("DeepSeek-R1", "H200", tp=2, pp=4), 200)
    print(f"\nmemory_plan (R1, TP2×PP4) median: {median * 1e3:.3f} ms (budget 1 ms)")
    assert median <= 1e-3


def test_timeline_10k_reasoning_requests_1xH200() -> None:
    s = Scenario(model="DeepSeek-R1-Distill-Llama-8B", num_requests=10_000, max_num_seqs=10_000)

    def cold() -> object:
        _predict_cached.cache_clear()  # predictions of a profile are cached; time the simulation itself
        return predict(s)

    median = median_s(cold, 3)
    print(
        f"\npredict 10,000 reasoning requests, 1×H200, max_num_seqs 10,000 median: {median * 1e3:.0f} ms "
        "(budget 250 ms)"
    )
    assert median <= 0.25


@pytest.mark.parametrize(
    ("label", "scenario"),
    [
        ("the default scenario (8B, 1xH200, 2,000 reasoning requests, max_num_seqs 1,024)", Scenario()),
        ("2,000 reasoning requests, 8B, 1xH200, max_num_seqs 2,000", Scenario(num_requests=2000, max_num_seqs=2000)),
    ],
)
def test_dashboard_prediction_under_100ms(label: str, scenario: Scenario) -> None:
    """The dashboard re-predicts on every slider move (500 ms end to end): the simulation's share must stay small."""

    def cold() -> object:
        _predict_cached.cache_clear()
        return predict(scenario)

    median = median_s(cold, 7)
    print(f"\npredict {label} median: {median * 1e3:.0f} ms (budget 100 ms)")
    assert median <= 0.1


def test_plan_8_gpus() -> None:
    s = Scenario(model="DeepSeek-R1-Distill-Qwen-14B", gpus=8, num_requests=2000)

    def cold() -> object:
        _predict_cached.cache_clear()
        return plan(s)

    median = median_s(cold, 3)
    print(f"\nplan 14B on 8×H200, 2,000 reasoning requests median: {median:.2f} s (budget 2 s)")
    assert median <= 2.0
