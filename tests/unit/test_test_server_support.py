"""The test server's locally built tokenizer: inside the model's vocabulary, special ids where the config says."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from tests.support.vllm_server import TINY_MODEL, ServerConfig, prepare_model_dir, server_command


def test_tokenizer_fits_the_model(tmp_path: Path) -> None:
    model_dir = prepare_model_dir(tmp_path / "model")
    config = json.loads((model_dir / "config.json").read_text())
    assert config == json.loads((TINY_MODEL / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == config["vocab_size"]
    assert tokenizer.token_to_id("<s>") == config["bos_token_id"]
    assert tokenizer.token_to_id("</s>") == config["eos_token_id"]
    ids = list(range(3, config["vocab_size"], 97))
    assert tokenizer.encode(tokenizer.decode(ids)).ids == ids  # every id decodes to a word that encodes back


def test_server_command_passes_an_explicit_kv_pool(tmp_path: Path) -> None:
    command = server_command(tmp_path, 8123, ServerConfig(kv_cache_memory_bytes=4 << 20))
    assert command[command.index("--kv-cache-memory-bytes") + 1] == str(4 << 20)
    assert "--enforce-eager" in command and command[command.index("--load-format") + 1] == "dummy"
