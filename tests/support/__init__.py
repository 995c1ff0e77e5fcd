"""Everything the test tiers share, in one place; conftest.py files hold only fixtures built from these modules, and
no tier imports another tier's conftest or test module.

- ``apptest``: drive app.py with Streamlit's AppTest and read the texts and charts a user sees.
- ``dashboard``: start the real dashboard (``streamlit run serve.py``) and drive Chromium through Playwright.
- ``paths``: the repository root and ``tool_files/``, the real files vLLM's own tools wrote (README.md there).
- ``run_bundles``: complete, self-consistent run bundles for the store (test inputs, not measurements).
- ``synthetic_runs``: fidelity runs simulated by the engine with a known calibration, labelled synthetic.
- ``tiny_models``: model configs small enough to simulate in milliseconds.
- ``tool_outputs``: inputs shaped like vLLM's benchmark results and Prometheus scrapes, built in code.
- ``vllm_server``, ``vllm_bench``, ``s3_server``: real vLLM CPU servers, vLLM's bench commands, moto's S3 server.
- ``store_reader``, ``make_tool_fixtures``: processes the tests start (a store reader) or a maintainer runs.
"""
