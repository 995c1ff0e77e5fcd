"""Write the real-tool fixtures of tests/integration/store_fixtures/ (README.md there has the commands this runs).

Run under the heavy-job lock: ``flock /tmp/cliffscope-heavy.lock python -m tests.support.make_tool_fixtures OUT``.
One vLLM CPU server (tests/support/vllm_server.py) serves ``vllm bench serve --save-result`` (summary only) and
``guidellm run`` (from .venv-guidellm, if installed); ``vllm bench sweep serve`` then starts its own server per serve
point, as it does for users. Every command is printed before it runs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.support.vllm_server import REPO_ROOT, ServerConfig, free_port, server_command, start_vllm_server

GUIDELLM = REPO_ROOT / ".venv-guidellm" / "bin" / "guidellm"


def _run(command: list[str], **kwargs) -> None:
    """Run one tool command, printing it first; a failure is printed and the next command still runs."""
    print("+", shlex.join(command), flush=True)
    result = subprocess.run(command, check=False, cwd=REPO_ROOT, timeout=600, **kwargs)
    print(f"exit {result.returncode}", flush=True)


def bench_summary(server, out: Path) -> None:
    _run([sys.executable, "-m", "tests.support.vllm_bench", "serve", "--backend", "vllm", "--base-url", server.url,
          "--model", server.served_model_name, "--tokenizer", str(server.model_dir), "--dataset-name", "random",
          "--random-input-len", "32", "--random-output-len", "24", "--num-prompts", "8", "--request-rate", "4",
          "--seed", "1", "--ignore-eos", "--percentile-metrics", "ttft,tpot,itl,e2el", "--save-result",
          "--result-dir", str(out), "--result-filename", "vllm-0.32-bench-serve-summary.json",
          "--metadata", "device=cpu", "max_num_seqs=16", "block_size=32"])  # fmt: skip


def guidellm(server, out: Path) -> None:
    if not GUIDELLM.exists():
        print("no .venv-guidellm: skipping the GuideLLM report", flush=True)
        return
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GUIDELLM__LOGGING__CONSOLE_LOG_LEVEL="DEBUG")
    prompts = out / "guidellm-prompts.jsonl"  # words of the test tokenizer's vocabulary, 24 per prompt
    prompts.write_text("".join(
        json.dumps({"prompt": " ".join(f"w{(7 * i + j) % 900}" for j in range(24)), "output_tokens_count": 16}) + "\n"
        for i in range(64)))  # fmt: skip
    _run([str(GUIDELLM), "run",
          "--backend", f"kind=openai_http,target={server.url},model={server.served_model_name},"
                       "request_format=/v1/completions",
          "--tokenizer", f"kind=huggingface_auto,model={server.model_dir}",
          "--profile", "kind=sweep,sweep_size=4,strategy_type=poisson",
          "--constraint", "kind=max_requests,count=6",
          "--data", f"kind=json_file,path={prompts}",
          "--output", f"kind=json,path={out / 'guidellm-0.8-benchmarks.json'}",
          "--disable-progress"], env=env)  # fmt: skip
    if not (out / "guidellm-0.8-benchmarks.json").exists():  # keep a report that says why (its errored requests)
        _run(
            [
                str(GUIDELLM),
                "run",
                "--backend",
                f"kind=openai_http,target={server.url},model={server.served_model_name},request_format=/v1/completions",
                "--tokenizer",
                f"kind=huggingface_auto,model={server.model_dir}",
                "--profile",
                "kind=synchronous",
                "--constraint",
                "kind=max_requests,count=3",
                "--data",
                "kind=synthetic_text,prompt_tokens=24,output_tokens=16",
                "--output",
                f"kind=json,path={out / 'guidellm-errors.json'}",
                "--disable-progress",
            ],
            env=env,
        )


def sweep(work: Path, out: Path) -> None:
    from tests.support.vllm_server import prepare_model_dir

    model_dir = prepare_model_dir(work / "sweep-model")
    port = free_port()
    serve = server_command(model_dir, port, ServerConfig())
    params = work / "bench-params.json"
    params.write_text(json.dumps([{"max_concurrency": 1}, {"max_concurrency": 4}]))
    serve_params = work / "serve-params.json"
    serve_params.write_text(json.dumps([{"max_num_seqs": 4}]))
    bench = [sys.executable, "-m", "tests.support.vllm_bench", "serve", "--backend", "vllm",
             "--base-url", f"http://127.0.0.1:{port}", "--model", "tiny-llama-4l", "--tokenizer", str(model_dir),
             "--dataset-name", "random", "--random-input-len", "32", "--random-output-len", "16",
             "--num-prompts", "6", "--seed", "1", "--ignore-eos"]  # fmt: skip
    _run([sys.executable, "-m", "tests.support.vllm_bench", "sweep-serve", "--serve-cmd", shlex.join(serve),
          "--bench-cmd", shlex.join(bench), "--after-bench-cmd", "true", "--serve-params", str(serve_params),
          "--bench-params", str(params), "--num-runs", "1", "-o", str(out), "-e", "vllm-0.32-bench-sweep",
          "--server-ready-timeout", "600"],
         env=dict(os.environ, VLLM_CACHE_ROOT=str(work / "vllm-cache"), HF_HUB_OFFLINE="1"))  # fmt: skip


def main(out: Path, work: Path, only: set[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if only & {"bench", "guidellm"}:
        with start_vllm_server(work / "server", ServerConfig()) as server:
            print("server up in", server.startup_s, "s:", shlex.join(server.command), flush=True)
            if "bench" in only:
                bench_summary(server, out)
            if "guidellm" in only:
                guidellm(server, out)
    if "sweep" in only:
        sweep(work, out)


if __name__ == "__main__":
    import tempfile

    target = Path(sys.argv[1])
    parts = set(sys.argv[2:]) or {"bench", "guidellm", "sweep"}
    with tempfile.TemporaryDirectory(prefix="cliffscope-fixtures-") as tmp:
        main(target, Path(tmp), parts)
