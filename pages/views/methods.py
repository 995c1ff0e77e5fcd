"""Methods: how the predictions are made, in the engine engineer's words (docs/methods.md), and where the engine
and the paper disagree."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine.catalog import load_model
from engine.memory import PAPER_KV_BYTES_PER_TOKEN, kv_dtype_bytes_of

METHODS_FILE = Path(__file__).resolve().parents[2] / "docs" / "methods.md"

if METHODS_FILE.is_file():
    text = METHODS_FILE.read_text(encoding="utf-8")
    if not text.lstrip().startswith("# "):
        st.title("Methods")
    st.markdown(text)
else:
    st.title("Methods")
    st.warning(f"{METHODS_FILE.name} is missing from this installation; the notes below are computed live.")

st.subheader("Where the engine and the paper disagree (computed now)")
rows = []
for name, paper_bytes in PAPER_KV_BYTES_PER_TOKEN.items():
    model = load_model(name)
    ours = model.kv_bytes_per_token(kv_dtype_bytes_of("auto", 2.0))
    rows.append(
        f"- **{model.name}, KV cache per token:** the paper states {paper_bytes / 1e6:.2f} MB; the engine computes "
        f"{ours / 1e6:.3f} MB = {model.num_layers} layers × 2 (K and V) × {model.num_kv_heads} KV heads × "
        f"{model.head_dim} head dim × 2 bytes (bf16), from the model's config.json. Ratio paper/engine: "
        f"{paper_bytes / ours:.1f}×."
    )
st.markdown("\n".join(rows))
