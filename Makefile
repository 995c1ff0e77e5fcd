# cliffscope: `make run` starts the dashboard, `make test` runs every test. Each installs what it needs.
# Real-vLLM tests run in a pytest process of their own: vLLM spawns its engine core, and a spawned child
# re-imports the parent's __main__, which AppTest replaces with app.py once the dashboard tests have run.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
PYTEST_ARGS ?=

.PHONY: run test lint bench install-app install-test clean

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.app-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	-$(PY) -m engine.window_jit  # compile the simulator's event loop into numba's cache now, not on a visit
	touch $@

$(VENV)/.test-installed: pyproject.toml scripts/install-test-deps.sh | $(PY)
	bash scripts/install-test-deps.sh $(VENV)
	touch $(VENV)/.app-installed $@

install-app: $(VENV)/.app-installed
install-test: $(VENV)/.test-installed

run: install-app
	$(PY) -m streamlit run serve.py --server.headless true --server.port $(PORT) --browser.gatherUsageStats false

lint: install-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: install-test
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not bench and not vllm" $(PYTEST_ARGS)
	$(PY) -m pytest -m "vllm and not bench" $(PYTEST_ARGS)

bench: install-test
	$(PY) -m pytest -m bench tests/bench -s $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .artifacts
