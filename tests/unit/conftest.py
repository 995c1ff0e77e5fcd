"""Fixtures shared by the unit tests of the simulator, the served-run prediction and the bench client's arrivals."""

from __future__ import annotations

import json

import pytest

# A 4-layer Llama-shaped model (2 KV heads × 64): 2,048 bytes of KV per token, small enough to simulate in ms.
TINY = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 1024,
    "max_position_embeddings": 8192,
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The path of TINY's config.json, as a user's own config would be given."""
    path = tmp_path_factory.mktemp("tiny") / "config.json"
    path.write_text(json.dumps(TINY))
    return str(path)
