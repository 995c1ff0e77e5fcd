"""Write the real-tool fixtures of tests/support/tool_files/ (README.md there has the commands this runs).

Run under the heavy-job lock: ``flock /tmp/cliffscope-heavy.lock python -m tests.support.make_tool_fixtures OUT``.
One vLLM CPU server (tests/support/vllm_server.py) serves ``vllm bench serve --save-result`` (summary only) and
``guidellm run`` (from .venv-guidellm, if installed); ``vllm bench sweep serve`` then starts its own server per serve
point, as it does for users. Every command is printed before it runs.
"""

from __future__ import annotations

import gzip
import json
import os
import shlex
import shutil
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


# GuideLLM's own synthetic data (``kind=synthetic_text``) cannot run on the test tokenizer: it encodes generated
# English, keeps the first N ids and decodes them with skip_special_tokens, and on a word-level vocabulary of
# ``w0 ... wN`` every English word is ``<unk>``, so each prompt decodes to "" and every request fails before it is
# sent ("Cannot build /v1/completions prompt: missing text_column"), leaving no report at all ("No measurement start
# or end times available"). A JSONL file of words the tokenizer knows, 24 per prompt with 16 output tokens asked for
# (GuideLLM then sends ``max_tokens``/``max_completion_tokens`` with ``ignore_eos``), is what these runs use.
GUIDELLM_RUNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("guidellm-0.8-sweep", ("--profile", "kind=sweep,sweep_size=4,strategy_type=poisson")),
    ("guidellm-0.8-concurrent", ("--profile", "kind=concurrent,streams=2", "--override", "profile.streams", "2,4")),
    ("guidellm-0.8-constant", ("--profile", "kind=constant,rate=4")),
)


def guidellm_prompts(path: Path) -> Path:
    """64 prompts of 24 words from the test tokenizer's vocabulary, each asking for 16 output tokens."""
    lines = (
        json.dumps({"prompt": " ".join(f"w{(7 * i + j) % 900}" for j in range(24)), "output_tokens_count": 16})
        for i in range(64)
    )
    path.write_text("".join(line + "\n" for line in lines))
    return path


def guidellm_command(server, prompts: Path, out: Path, name: str, profile: tuple[str, ...]) -> list[str]:
    """``guidellm run`` against the server's chat endpoint (GuideLLM's default), 6 requests per benchmark."""
    outputs = ["--output", f"kind=json,path={out / (name + '.json')}"]
    if name.endswith("constant"):  # one benchmark: YAML loads ~10x slower than JSON, so the small one
        outputs += ["--output", f"kind=yaml,path={out / (name + '.yaml')}"]
    return [str(GUIDELLM), "run",
            "--backend", f"kind=openai_http,target={server.url},model={server.served_model_name}",
            "--tokenizer", f"kind=huggingface_auto,model={server.model_dir}",
            *profile, "--constraint", "kind=max_requests,count=6",
            "--data", f"kind=json_file,path={prompts}", *outputs, "--disable-progress"]  # fmt: skip


def gzip_in_place(path: Path) -> None:
    """Store a report as PATH.gz (no name or time in the gzip header, so a rerun differs only where GuideLLM's does)."""
    with (
        path.open("rb") as source,
        open(str(path) + ".gz", "wb") as sink,
        gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=9) as target,
    ):
        shutil.copyfileobj(source, target)
    path.unlink()


def guidellm(server, out: Path, work: Path) -> None:
    if not GUIDELLM.exists():
        print("no .venv-guidellm (scripts/install-test-deps.sh with CLIFFSCOPE_GUIDELLM=1): no GuideLLM report")
        return
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GUIDELLM__LOGGING__CONSOLE_LOG_LEVEL="INFO")
    prompts = guidellm_prompts(work / "guidellm-prompts.jsonl")
    for name, profile in GUIDELLM_RUNS:
        _run(guidellm_command(server, prompts, out, name, profile), env=env)
        for report in (out / f"{name}.json", out / f"{name}.yaml"):
            if report.exists():
                gzip_in_place(report)


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
                guidellm(server, out, work)
    if "sweep" in only:
        sweep(work, out)


if __name__ == "__main__":
    import tempfile

    target = Path(sys.argv[1])
    parts = set(sys.argv[2:]) or {"bench", "guidellm", "sweep"}
    with tempfile.TemporaryDirectory(prefix="cliffscope-fixtures-") as tmp:
        main(target, Path(tmp), parts)
