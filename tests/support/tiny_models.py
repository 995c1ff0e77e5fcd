"""Model configs small enough to simulate in milliseconds, given to the engine as a user's own config.json would be."""

from __future__ import annotations

from typing import Any

# A 4-layer Llama-shaped model (2 KV heads × 64): 2,048 bytes of KV per token, small enough to simulate in ms.
TINY: dict[str, Any] = {
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
