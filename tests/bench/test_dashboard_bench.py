"""Dashboard budgets in a real Chromium (run with `make bench`):

- a slider change to the redrawn chart: p95 over ≥ 20 moves, goal ≤ 500 ms. Each move is a new scenario (the
  gpu_memory_utilization slider steps by 0.01), so each needs a fresh prediction — the honest worst case;
- the first load of Explore on a freshly started server, goal ≤ 3 s for the median over three servers (and a warm
  load by a second visitor): from the request to every chart of the page drawn (the predicted timelines and the
  measured-cliff panel), in a browser window already open (as a user's is when they paste a link).

Both goals are issue #5's (the dashboard's); issue #15 (the knee) adds none for the dashboard and keeps its
recommendation off the first load. The goals are wall time, what a user waits; on this shared 2-core host that
swings with the neighbours' load, so each load's CPU seconds (the dashboard server, Chromium and Playwright, every
process under this test's) and the host's load average are reported beside it: the CPU seconds are the work the
load costs, which the neighbours do not change.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.support.dashboard import SCENARIO_KV_Y, VIEWPORT, chromium, chromium_available, dashboard_server, wait_idle

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(not chromium_available(), reason="Debian's chromium (/usr/bin/chromium) or playwright missing"),
]

MOVES = 24
FRESH_SERVERS = 3  # first loads, one per freshly started server; the budget holds for their median
WINDOW_SETTLE_MS = 1500
SLIDER_P95_BUDGET_S = 0.5
FIRST_LOAD_BUDGET_S = 3.0
KV_SIGNATURE = SCENARIO_KV_Y  # the scenario's predicted KV usage, the first row of its timelines figure
# Everything Explore draws on a fresh default database: the scenario's timelines (one figure, five rows) and the
# measured-cliff panel (one figure, two panels; the bundled runs hold no run of the default model and device), each
# with its lines drawn.
CHARTS_DRAWN = """() => {
    const plots = [...document.querySelectorAll('.js-plotly-plot')];
    return plots.length >= 2 && plots.every(p => p.querySelector('.scatterlayer .trace'))
        && plots.some(p => (p.data || []).some(t => (t.name || '').includes('this scenario')));
}"""


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("bench") / "cliffscope.duckdb"
    with dashboard_server(db) as base:
        yield base


@dataclass(frozen=True)
class Load:
    wall_s: float
    cpu_s: float  # CPU seconds of every process under this test's (server, Chromium, Playwright) during the load
    load_avg_1m: float  # the host's, at the end of the load
    cpu_by_process: tuple[tuple[str, float], ...] = ()  # the same seconds by process kind, largest first


def stack_cpu_s() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of this process and every process below it, by pid, with the process's kind (a process
    that ends during a load takes its seconds with it: a slight undercount, never a double count)."""
    out = {}
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            out[proc.pid] = (_kind(proc), t.user + t.system)
        except psutil.Error:  # ended between the listing and the read
            continue
    return out


def _kind(proc: psutil.Process) -> str:
    cmd = " ".join(proc.cmdline())
    if proc.pid == os.getpid():
        return "pytest"
    if "streamlit" in cmd:
        return "dashboard server"
    if "--type=renderer" in cmd:
        return "chromium renderer"
    if "--type=" in cmd:
        return "chromium " + cmd.split("--type=", 1)[1].split()[0]
    return "chromium browser" if "chrom" in cmd else proc.name()


def first_load_on_new_servers(browser, tmp_path_factory: pytest.TempPathFactory, count: int) -> list[Load]:
    """The first visitor's load on each of ``count`` freshly started servers (each on its own new database): one
    sample per server, so the budget is checked on their median rather than on one busy moment of the host."""
    loads = []
    for _ in range(count):
        with dashboard_server(tmp_path_factory.mktemp("bench-first") / "cliffscope.duckdb") as base:
            loads.append(load_explore(browser, base))
    return loads


def load_explore(browser, base: str) -> Load:
    page = browser.new_page(viewport=VIEWPORT)
    # A user's browser window exists before they open a link: let the new window finish its own start-up first.
    # (Headless Chromium fills a renderer of its own with the omnibox popup's WebUI, ~0.5 CPU-s that would
    # otherwise compete with the page for this host's two cores.)
    page.goto("about:blank")
    page.wait_for_timeout(WINDOW_SETTLE_MS)
    before = stack_cpu_s()
    start = time.perf_counter()
    page.goto(f"{base}/explore")
    page.wait_for_function(CHARTS_DRAWN, timeout=120_000)
    elapsed = time.perf_counter() - start
    after = stack_cpu_s()  # a process started during the load counts from zero
    page.close()
    spent: dict[str, float] = {}
    for pid, (kind, t) in after.items():
        spent[kind] = spent.get(kind, 0.0) + t - before.get(pid, (kind, 0.0))[1]
    ranked = tuple(sorted(spent.items(), key=lambda kv: -kv[1]))
    return Load(elapsed, sum(spent.values()), os.getloadavg()[0], ranked)


def test_explore_first_load_and_slider_redraw(fresh_server: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    with chromium() as browser:
        loads = [load_explore(browser, fresh_server)]
        warm = sorted(load_explore(browser, fresh_server).wall_s for _ in range(3))
        loads += first_load_on_new_servers(browser, tmp_path_factory, FRESH_SERVERS - 1)
        firsts = [x.wall_s for x in loads]
        first = float(np.median(firsts))
        first_cpu = float(np.median([x.cpu_s for x in loads]))

        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{fresh_server}/explore")
        page.wait_for_function(CHARTS_DRAWN, timeout=120_000)
        wait_idle(page)
        slider = page.locator("[data-testid='stSlider']", has_text="gpu_memory_utilization")
        thumb = slider.locator("input[type='range']")
        latencies = []
        for _ in range(MOVES):
            before = page.evaluate(KV_SIGNATURE)
            thumb.focus()
            start = time.perf_counter()
            thumb.press("ArrowLeft")
            page.wait_for_function(f"(before) => ({KV_SIGNATURE})() !== before", arg=before, timeout=120_000)
            latencies.append(time.perf_counter() - start)
            wait_idle(page)
        cached = []
        for _ in range(6):  # back over values already predicted: the redraw without the engine
            before = page.evaluate(KV_SIGNATURE)
            start = time.perf_counter()
            thumb.press("ArrowRight")
            page.wait_for_function(f"(before) => ({KV_SIGNATURE})() !== before", arg=before, timeout=120_000)
            cached.append(time.perf_counter() - start)
            wait_idle(page)
        page.close()

    lat = np.array(latencies)
    p50, p95 = float(np.percentile(lat, 50)), float(np.percentile(lat, 95))
    print(
        f"\nExplore first load on a fresh server: median {first:.2f} s over {FRESH_SERVERS} servers "
        f"({', '.join(f'{x:.2f}' for x in firsts)} s; goal {FIRST_LOAD_BUDGET_S} s); "
        f"CPU median {first_cpu:.2f} s ({', '.join(f'{x.cpu_s:.2f}' for x in loads)} CPU-s; load average "
        f"{', '.join(f'{x.load_avg_1m:.1f}' for x in loads)}); warm loads median {warm[1]:.2f} s"
        + "".join(
            f"\n  first load {i + 1} CPU-s by process: " + ", ".join(f"{k} {v:.2f}" for k, v in x.cpu_by_process[:5])
            for i, x in enumerate(loads)
        )
        + f"\nslider → redrawn chart over {MOVES} moves, each a new prediction: p50 {p50 * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms (goal {SLIDER_P95_BUDGET_S * 1000:.0f} ms); "
        f"back over cached values: median {np.median(cached) * 1000:.0f} ms"
    )
    report = Path(".artifacts") / "dashboard-bench.txt"
    report.parent.mkdir(exist_ok=True)
    report.write_text(
        f"first_load_s={first:.3f}\nfirst_loads_s={','.join(f'{x:.3f}' for x in firsts)}\n"
        f"first_load_cpu_s={first_cpu:.3f}\nfirst_loads_cpu_s={','.join(f'{x.cpu_s:.3f}' for x in loads)}\n"
        f"first_loads_load_avg_1m={','.join(f'{x.load_avg_1m:.2f}' for x in loads)}\n"
        f"warm_load_median_s={warm[1]:.3f}\nslider_p50_s={p50:.3f}\nslider_p95_s={p95:.3f}\n"
        f"slider_cached_median_s={float(np.median(cached)):.3f}\nmoves={MOVES}\n"
    )
    assert first <= FIRST_LOAD_BUDGET_S, f"first load {first:.2f} s over {FIRST_LOAD_BUDGET_S} s"
    assert p95 <= SLIDER_P95_BUDGET_S, f"slider p95 {p95 * 1000:.0f} ms over {SLIDER_P95_BUDGET_S * 1000:.0f} ms"
