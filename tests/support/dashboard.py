"""Start the real dashboard (`streamlit run serve.py`, as `make run` does); drive Debian's Chromium with Playwright.

Shared by the browser tests, the dashboard benchmark and the store's multi-process tests: one server per test module,
on a free port, with its own DuckDB file so tests never touch the user's database.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 900}
# What `make run` starts: app.py behind st.App, with the start-up work done before the first request (serve.py).
# CLIFFSCOPE_ENTRY=app.py measures a bare `streamlit run app.py` instead.
ENTRY = os.environ.get("CLIFFSCOPE_ENTRY", "serve.py")
ARTIFACTS = REPO / ".artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"


def chromium_available() -> bool:
    if not CHROMIUM.exists():
        return False
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def dashboard_server(db_path: Path, *, env: dict[str, str] | None = None, timeout_s: float = 90) -> Iterator[str]:
    """A freshly started dashboard; yields its base URL. The log goes to .artifacts/ for post-mortems."""
    with streamlit_server(REPO, ENTRY, env={"CLIFFSCOPE_DB": str(db_path), **(env or {})}, timeout_s=timeout_s) as base:
        yield base


@contextmanager
def streamlit_server(
    app_dir: Path, entry: str, *, env: dict[str, str] | None = None, timeout_s: float = 90
) -> Iterator[str]:
    """``streamlit run ENTRY`` in ``app_dir``, freshly started; yields its base URL once it answers its health check."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / f"streamlit-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", entry, "--server.headless", "true", "--server.address",
         "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=app_dir, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as resp:
                    if resp.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start (see {log.name})")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextmanager
def chromium() -> Iterator[object]:
    """Debian's Chromium under Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


IDLE = "[data-testid='stApp'][data-test-script-state='notRunning'][data-test-connection-state='CONNECTED']"


def wait_idle(page: object, timeout_ms: int = 60_000) -> None:
    """Wait until the app is connected and its script run has finished (Streamlit marks both on stApp)."""
    page.wait_for_selector(IDLE, timeout=timeout_ms)  # type: ignore[attr-defined]


def screenshot(page: object, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


def copy_db(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)


# The scenario's timelines on Explore: one figure of rows over a shared time axis, its KV-usage row on the first
# y axis. The measured-cliff panel's charts show a stored run ("engine for run …"), never "this scenario".
SCENARIO_TIMELINES = """() => [...document.querySelectorAll('.js-plotly-plot')]
    .find(p => (p.data || []).some(t => (t.name || '').includes('this scenario')))"""
# The y-values of the scenario's predicted KV usage as the browser holds them ('' before it is drawn).
SCENARIO_KV_Y = f"""() => {{
    const p = ({SCENARIO_TIMELINES})();
    const kv = p && p.data.find(t => (t.yaxis || 'y') === 'y' && (t.name || '').startsWith('predicted'));
    return kv ? JSON.stringify(kv.y).slice(0, 4000) : '';
}}"""
