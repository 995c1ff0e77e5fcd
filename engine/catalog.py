"""Model and device catalogs: ``ModelSpec`` from any Hugging Face ``config.json``, ``GpuSpec`` from ``data/gpus.toml``.

Parameter counts are derived from the config (never typed in), so a user's own config.json gets the same treatment as
the bundled ones. Everything here is pure data; sizing rules live in ``engine.memory``.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MODELS_DIR = DATA_DIR / "models"
GPUS_FILE = DATA_DIR / "gpus.toml"
HOSTS_DIR = DATA_DIR / "hosts"
GIB = 1024**3

# Bytes per element of a dtype name as vLLM accepts them.
DTYPE_BYTES: dict[str, float] = {
    "auto": 2,
    "bfloat16": 2,
    "bf16": 2,
    "float16": 2,
    "fp16": 2,
    "half": 2,
    "float32": 4,
    "fp32": 4,
    "float": 4,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
}
# Bytes per weight of a quantized linear layer under vLLM's ``--quantization`` flag on a 16-bit checkpoint, and the
# defaults of checkpoints whose config does not say more (int4 with one fp16 scale + packed zero per group of 128).
QUANT_WEIGHT_BYTES: dict[str, float] = {"fp8": 1.0 + 4 / (128 * 128), "awq": 0.5 + 2.5 / 128, "gptq": 0.5 + 2.5 / 128}
QUANTIZATIONS = ("none", "fp8", "awq", "gptq")
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
DTYPES = ("auto", "bfloat16", "float16", "float32")


class CatalogError(ValueError):
    """A model or device that cannot be found or understood; the message names the fix."""


@dataclass(frozen=True)
class WeightScheme:
    """How a checkpoint stores its weights, in bytes per parameter by where the parameter lives.

    vLLM quantizes linear layers only; embeddings, the LM head, norms and MoE routers stay 16-bit in every scheme
    below (``vllm/model_executor/layers/quantization/*``: none of them wraps ``VocabParallelEmbedding`` or the
    router's ``ReplicatedLinear`` unless a config says so). Scales are counted with the weights they scale:
    FP8 block-scaled (DeepSeek-V3/R1, Qwen3-FP8): one fp32 ``weight_scale_inv`` per 128×128 block; compressed-tensors
    FP8 per-channel: one fp32 scale per output row; AWQ/GPTQ int4: one fp16 scale and a packed 4-bit zero per group;
    MXFP4 (gpt-oss): 4-bit values with one e8m0 byte per 32, on the MoE experts only (attention stays bf16,
    ``modules_to_not_convert`` in the published gpt-oss configs).
    """

    method: str  # the config's quant_method (or the --quantization flag); "none" for 16/32-bit checkpoints
    linear_bytes: float  # per parameter of a quantized dense linear layer (attention, dense MLP, shared experts)
    expert_bytes: float  # per parameter of a routed MoE expert
    attention_quantized: bool = True  # False: attention projections stay 16-bit (gpt-oss MXFP4)
    expert_intermediate_align: int = 1  # experts' per-rank intermediate size rounded up to this (MXFP4 kernels)
    expert_hidden_align: int = 1  # experts' hidden size rounded up to this (MXFP4's Marlin kernel)
    detail: str = ""  # e.g. "block 128x128", "group 128", for the breakdown


MXFP4_KERNELS = ("triton", "marlin")


def mxfp4_scheme(kernel: str) -> WeightScheme:
    """MXFP4 experts as vLLM pads them for the MoE kernel it picked (``mxfp4_round_up_hidden_size_and_intermediate_
    size`` in vllm/model_executor/layers/fused_moe/oracle/mxfp4.py). The Triton kernel, vLLM's choice on Hopper when
    the triton_kernels package is present, pads each rank's intermediate size to a multiple of 256: gpt-oss-20b and
    -120b come to 13.45 and 64.49 GiB against the 13.47 and 64.38 GiB vLLM v0.11.0 logs on an H100. The Marlin
    kernel, its fallback on a GPU without native FP4 (its log warns "Weight-only FP4 compression will be used
    leveraging the Marlin kernel"), pads the intermediate size to 128 and the hidden size to 256: gpt-oss-120b then
    loads 65.84 GiB against the 65.97 GiB two logs on an H100 show (vLLM 0.10.1 and 0.11.2), and 17.16 GiB per rank at
    TP=4 against an A100 log's 17.22."""
    if kernel not in MXFP4_KERNELS:
        raise CatalogError(f"mxfp4 kernel {kernel!r} is not one of {', '.join(MXFP4_KERNELS)}")
    intermediate, hidden = (256, 1) if kernel == "triton" else (128, 256)
    return WeightScheme(
        "mxfp4", 2.0, 0.5 + 1 / 32, attention_quantized=False, expert_intermediate_align=intermediate,
        expert_hidden_align=hidden, detail=f"mxfp4 experts ({kernel} kernel)",
    )  # fmt: skip


def mxfp4_kernel_of(device: GpuSpec) -> str:
    """The MoE kernel vLLM runs MXFP4 experts on, by device: its Triton kernel needs compute capability 9.0 or more
    (``_triton_kernel_moe_supports_current_device`` in vllm/model_executor/layers/fused_moe/experts/
    gpt_oss_triton_kernels_moe.py), so an A100 or L40S runs Marlin (an A100 log: dennislee22/vLLM-benchmarking's
    gpt-oss-120b at TP=4 warns "leveraging the Marlin kernel"). A Hopper host without the triton_kernels package
    falls back to Marlin too; only its log tells (``published_kv.runtime_facts``)."""
    return "marlin" if 0 < device.compute_capability < 9.0 else "triton"


SUPPORTED_QUANT_METHODS = ("none", "fp8", "compressed-tensors", "modelopt", "awq", "gptq", "mxfp4")


def _group_size(value: Any, default: int = 128) -> int:
    try:
        g = int(value)
    except (TypeError, ValueError):
        return default
    return g if g > 0 else 0  # -1 / 0: one scale per output channel


def _int4_bytes(bits: int, group: int, zero: bool) -> float:
    """Packed ``bits``-bit values, an fp16 scale per group (and a packed zero point when asymmetric)."""
    per_group = 2 + (bits / 8 if zero else 0)
    return bits / 8 + (per_group / group if group else 0.0)


def _compressed_tensors_scheme(qc: dict[str, Any]) -> WeightScheme:
    groups = qc.get("config_groups") or {}
    weights = next((g.get("weights") for g in groups.values() if isinstance(g, dict) and g.get("weights")), None)
    if not isinstance(weights, dict):
        raise CatalogError("compressed-tensors config has no config_groups.*.weights: cannot size its weights")
    bits = int(weights.get("num_bits", 0))
    kind = str(weights.get("type", "int"))
    strategy = str(weights.get("strategy", "tensor"))
    if bits == 8 and kind == "float":
        return WeightScheme("compressed-tensors", 1.0, 1.0, detail=f"fp8 {strategy}")
    if bits in (4, 8) and kind == "int":
        group = _group_size(weights.get("group_size"), 0) if strategy == "group" else 0
        per = _int4_bytes(bits, group, not bool(weights.get("symmetric", True)))
        return WeightScheme("compressed-tensors", per, per, detail=f"int{bits} {strategy} {group or ''}".strip())
    if bits == 4 and kind == "float":  # NVFP4: fp8 scale per 16 values
        return WeightScheme("compressed-tensors", 0.5 + 1 / 16, 0.5 + 1 / 16, detail="nvfp4 group 16")
    raise CatalogError(f"compressed-tensors weights of {bits}-bit {kind} ({strategy}) are not sized by cliffscope")


def weight_scheme_from_config(qc: dict[str, Any] | None) -> WeightScheme:
    """The ``WeightScheme`` of a config.json's ``quantization_config``; an unknown method is an error, not bf16."""
    if not qc:
        return WeightScheme("none", 0.0, 0.0)
    method = str(qc.get("quant_method", "")).lower()
    if method == "fp8":
        block = qc.get("weight_block_size")
        if block:
            b0, b1 = (int(x) for x in block)
            per = 1.0 + 4 / (b0 * b1)
            return WeightScheme("fp8", per, per, detail=f"block {b0}x{b1}")
        return WeightScheme("fp8", 1.0, 1.0, detail="per-tensor")
    if method == "compressed-tensors":
        return _compressed_tensors_scheme(qc)
    if method == "modelopt":
        algo = str(qc.get("quant_algo") or (qc.get("quantization") or {}).get("quant_algo") or "").upper()
        if algo == "FP8":
            return WeightScheme("modelopt", 1.0, 1.0, detail="fp8 per-tensor")
        if algo == "NVFP4":
            return WeightScheme("modelopt", 0.5 + 1 / 16, 0.5 + 1 / 16, detail="nvfp4 group 16")
        raise CatalogError(f"ModelOpt quant_algo {algo or '(missing)'} is not sized by cliffscope (FP8, NVFP4 are)")
    if method in {"awq", "gptq"}:
        bits = int(qc.get("bits", qc.get("w_bit", 4)))
        group = _group_size(qc.get("group_size", qc.get("q_group_size", 128)))
        per = _int4_bytes(bits, group, zero=True)
        return WeightScheme(method, per, per, detail=f"int{bits} group {group or 'channel'}")
    if method == "mxfp4":
        return mxfp4_scheme("triton")
    raise CatalogError(
        f"quantization_config.quant_method {method or '(missing)'!r} is not sized by cliffscope; "
        f"supported: {', '.join(SUPPORTED_QUANT_METHODS[1:])}"
    )


@dataclass(frozen=True)
class ParamCounts:
    """Parameters by where they live, because quantization and sharding treat them differently."""

    embedding: int  # input embedding (vocab-parallel under TP, on the first PP stage)
    lm_head: int  # output projection (0 when tied; vocab-parallel, on the last PP stage)
    attention_per_layer: int  # linear weights of one attention block
    dense_mlp_per_layer: int  # one dense MLP
    moe_routed_per_layer: int  # all routed experts of one MoE layer
    moe_active_routed_per_layer: int  # the experts one token uses
    moe_shared_per_layer: int  # shared experts of one MoE layer
    router_per_layer: int  # gate weights (kept in 16-bit)
    norm_per_layer: int  # norms and biases (replicated, 16-bit)
    final_norm: int


@dataclass(frozen=True)
class ModelSpec:
    """The architecture facts the engine needs, read from a Hugging Face ``config.json``."""

    name: str
    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool
    max_position_embeddings: int
    torch_dtype: str
    checkpoint_quantization: str  # "none" or the config's quantization_config method (e.g. fp8 for DeepSeek-R1)
    is_mla: bool = False
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    is_moe: bool = False
    num_experts: int = 0  # routed experts per MoE layer
    num_shared_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    num_dense_layers: int = 0  # layers with a dense MLP (DeepSeek's first_k_dense_replace; all for dense models)
    num_moe_layers: int = 0
    params: ParamCounts = field(repr=False, default=None)  # type: ignore[assignment]
    weight_scheme: WeightScheme = field(repr=False, default=WeightScheme("none", 0.0, 0.0))
    sliding_window: int = 0  # tokens a sliding-window layer attends to (0: none)
    layer_attention: tuple[str, ...] = ()  # per layer: "full" or "sliding" (empty: all full)
    total_params: int = 0
    active_params: int = 0
    config_sha256: str = ""
    config_path: str = ""

    @property
    def kv_entries_per_token_per_layer(self) -> int:
        """Elements cached per token per layer: K and V for every KV head, or the MLA latent + rope key."""
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    def kv_bytes_per_token(self, kv_dtype_bytes: float = 2) -> int:
        """KV-cache bytes one token occupies across all layers of the whole model."""
        return int(self.num_layers * self.kv_entries_per_token_per_layer * kv_dtype_bytes)

    @property
    def attention_heads_dim(self) -> int:
        """Width of the query projection (heads × per-head q dim); used by attention FLOPs."""
        if self.is_mla:
            return self.num_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim)
        return self.num_heads * self.head_dim


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator (or a CPU host) as the performance model sees it: peaks plus default efficiencies."""

    name: str
    memory_bytes: int
    hbm_bytes_per_s: float
    bf16_flops: float
    link_bytes_per_s: float
    source: str
    kind: str = "gpu"  # "gpu" | "cpu"
    vendor: str = ""
    fp8_flops: float = 0.0
    link_latency_s: float = 5e-6
    gpus_per_node: int = 8
    mem_efficiency: float = 0.8
    compute_efficiency: float = 0.65
    link_efficiency: float = 0.8
    step_overhead_s: float = 0.004
    non_torch_bytes: int = 0  # unused by the memory model since issue #11 (see engine.memory.non_torch_bytes)
    compute_capability: float = 0.0  # CUDA compute capability (9.0 Hopper): picks vLLM's MLA backend and block size
    ranks_sharing: int = 1  # CPU hosts: engine ranks (DP × TP × PP) running on this one host (engine.perf)
    peer_to_peer: bool = True  # GPU peer access: without it vLLM turns custom all-reduce off (smaller non-torch)
    # The host link (PCIe) per device, one direction: what collectives cross when the GPUs have no peer access
    # (``without_peer_to_peer``); 0 when the catalog does not know it
    pcie_bytes_per_s: float = 0.0
    # Non-torch memory per device of a TP/PP layout as vLLM ≥ 0.27 measured it on this device type (consumed memory
    # minus weights in its start-up log); 0 when no such log is known, and the version's figures apply
    multi_gpu_non_torch_gib: float = 0.0

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB


# ---------------------------------------------------------------------------------------------------------- models


# Model types whose MLP is two matrices (fc1 up, fc2 down, a plain activation between: vLLM's ``PhiMLP``) rather than
# the gated three (gate, up, down) of Llama-style models; counting three would add a third of the MLP's weights
# (phi-2: 3.62 B parameters instead of its 2.78 B, against the 5.19 GiB vLLM loads).
NON_GATED_MLP_MODEL_TYPES = frozenset({"phi"})


def _int(cfg: dict[str, Any], *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CatalogError(f"config field {key!r} must be a number, got {value!r}")
            return int(value)
    if default is None:
        raise CatalogError(f"config.json lacks {keys[0]!r}; it is needed to size the model")
    return default


def model_from_config(cfg: dict[str, Any], name: str, sha256: str = "", path: str = "") -> ModelSpec:
    """Build a ``ModelSpec`` from a parsed HF config (a wrapped ``text_config`` is unwrapped; a vision tower is refused:
    its weights and vLLM's encoder profile run are not sized, and leaving them out would size the model silently
    wrong). The wrapper's checkpoint-wide fields (quantization, dtype) stay with the text model they apply to."""
    if "text_config" in cfg and "num_hidden_layers" not in cfg:
        if cfg.get("vision_config") is not None:
            raise CatalogError(
                f"model {name!r}: its vision tower (vision_config) is not sized by this engine (weights and vLLM's "
                "multimodal profile run); use a text-only checkpoint of the same language model"
            )
        outer = {k: cfg[k] for k in ("quantization_config", "compression_config", "torch_dtype", "dtype") if k in cfg}
        cfg = {**outer, **cfg["text_config"], "architectures": cfg.get("architectures", [])}
    archs = cfg.get("architectures") or [cfg.get("model_type", "unknown")]
    architecture = str(archs[0])
    model_type = str(cfg.get("model_type", "")).lower()
    hidden = _int(cfg, "hidden_size", "n_embd", "d_model")
    layers = _int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _int(cfg, "num_attention_heads", "n_head")
    kv_heads = _int(cfg, "num_key_value_heads", default=heads)
    head_dim = _int(cfg, "head_dim", default=hidden // heads if heads else 0)
    vocab = _int(cfg, "vocab_size")
    inter = _int(cfg, "intermediate_size", "ffn_dim", default=4 * hidden)
    tied = bool(cfg.get("tie_word_embeddings", False))
    # Qwen2 always has q/k/v bias; others say so with attention_bias.
    attn_bias = bool(cfg.get("attention_bias", False)) or model_type in {"qwen2", "qwen2_moe", "gpt_oss"}
    max_pos = _int(cfg, "max_position_embeddings", "n_positions", default=4096)
    torch_dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    quant_cfg = cfg.get("quantization_config") or cfg.get("compression_config") or {}
    if not isinstance(quant_cfg, dict):
        raise CatalogError(f"model {name!r}: quantization_config must be a JSON object")
    scheme = weight_scheme_from_config(quant_cfg)
    ckpt_quant = scheme.method
    if min(hidden, layers, heads, kv_heads, head_dim, vocab) <= 0:
        raise CatalogError(f"model {name!r}: sizes in config.json must be positive")

    is_mla = cfg.get("kv_lora_rank") is not None
    kv_lora = _int(cfg, "kv_lora_rank", default=0)
    q_lora = _int(cfg, "q_lora_rank", default=0) if cfg.get("q_lora_rank") is not None else 0
    rope_dim = _int(cfg, "qk_rope_head_dim", default=0)
    nope_dim = _int(cfg, "qk_nope_head_dim", default=0)
    v_dim = _int(cfg, "v_head_dim", default=head_dim)

    # Attention linear weights of one layer.
    if is_mla:
        q_out = heads * (nope_dim + rope_dim)
        q_params = hidden * q_lora + q_lora * q_out if q_lora else hidden * q_out
        attn = q_params + hidden * (kv_lora + rope_dim) + kv_lora * heads * (nope_dim + v_dim) + heads * v_dim * hidden
        attn_norms = (q_lora if q_lora else 0) + kv_lora
        head_dim_eff = nope_dim + rope_dim
    else:
        attn = hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden
        attn_norms = (heads + 2 * kv_heads) * head_dim if attn_bias else 0
        if model_type.startswith("qwen3"):
            attn_norms += 2 * head_dim  # q_norm, k_norm
        head_dim_eff = head_dim

    # MoE layout: DeepSeek (n_routed_experts), Mixtral (num_local_experts), Qwen-MoE (num_experts).
    n_experts = _int(cfg, "n_routed_experts", "num_local_experts", "num_experts", default=0)
    is_moe = n_experts > 1
    k_experts = _int(cfg, "num_experts_per_tok", "moe_topk", default=2 if is_moe else 0)
    n_shared = _int(cfg, "n_shared_experts", default=0)
    moe_inter = inter if model_type == "mixtral" else _int(cfg, "moe_intermediate_size", default=inter)
    shared_inter = _int(cfg, "shared_expert_intermediate_size", default=0)
    if is_moe:
        first_dense = _int(cfg, "first_k_dense_replace", default=0)
        freq = max(1, _int(cfg, "moe_layer_freq", "decoder_sparse_step", default=1))
        mlp_only = set(cfg.get("mlp_only_layers") or [])
        moe_layers = sum(
            1 for i in range(layers) if i >= first_dense and (i - first_dense) % freq == 0 and i not in mlp_only
        )
    else:
        moe_layers = 0
    dense_layers = layers - moe_layers
    window = _int(cfg, "sliding_window", default=0) if cfg.get("sliding_window") else 0
    layer_attention = _layer_attention(cfg, layers, window)

    mlp = (2 if model_type in NON_GATED_MLP_MODEL_TYPES else 3) * hidden * inter
    routed = n_experts * 3 * hidden * moe_inter if is_moe else 0
    active_routed = k_experts * 3 * hidden * moe_inter if is_moe else 0
    shared = (n_shared * 3 * hidden * moe_inter + 3 * hidden * shared_inter) if is_moe else 0
    router = (hidden * n_experts + (hidden if shared_inter else 0)) if is_moe else 0
    norm = 2 * hidden + attn_norms
    counts = ParamCounts(
        embedding=vocab * hidden,
        lm_head=0 if tied else vocab * hidden,
        attention_per_layer=attn,
        dense_mlp_per_layer=mlp,
        moe_routed_per_layer=routed,
        moe_active_routed_per_layer=active_routed,
        moe_shared_per_layer=shared,
        router_per_layer=router,
        norm_per_layer=norm,
        final_norm=hidden,
    )
    common = counts.embedding + counts.lm_head + counts.final_norm + layers * (attn + norm)
    total = common + dense_layers * mlp + moe_layers * (routed + shared + router)
    active = common + dense_layers * mlp + moe_layers * (active_routed + shared + router)
    return ModelSpec(
        name=name,
        architecture=architecture,
        model_type=model_type,
        num_layers=layers,
        hidden_size=hidden,
        intermediate_size=inter,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim_eff,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        attention_bias=attn_bias,
        max_position_embeddings=max_pos,
        torch_dtype=torch_dtype,
        checkpoint_quantization=ckpt_quant,
        is_mla=is_mla,
        kv_lora_rank=kv_lora,
        q_lora_rank=q_lora,
        qk_rope_head_dim=rope_dim,
        qk_nope_head_dim=nope_dim,
        v_head_dim=v_dim if is_mla else head_dim,
        is_moe=is_moe,
        num_experts=n_experts if is_moe else 0,
        num_shared_experts=n_shared,
        experts_per_token=k_experts if is_moe else 0,
        moe_intermediate_size=moe_inter if is_moe else 0,
        shared_expert_intermediate_size=shared_inter,
        num_dense_layers=dense_layers,
        num_moe_layers=moe_layers,
        params=counts,
        weight_scheme=scheme,
        sliding_window=window if "sliding" in layer_attention else 0,
        layer_attention=layer_attention,
        total_params=total,
        active_params=active,
        config_sha256=sha256,
        config_path=path,
    )


def _layer_attention(cfg: dict[str, Any], layers: int, window: int) -> tuple[str, ...]:
    """Per-layer attention kind from ``layer_types`` (gpt-oss, Gemma-3, Qwen3-Next style configs).

    A config with a ``sliding_window`` but no per-layer list and ``use_sliding_window`` false (Qwen2/Qwen3) is full
    attention everywhere, as vLLM treats it; a kind other than full/sliding attention is an error, never sized as full.
    """
    kinds = cfg.get("layer_types")
    if kinds is None:
        if window and cfg.get("use_sliding_window") is True and cfg.get("max_window_layers") is None:
            return ("sliding",) * layers
        return ()
    if not isinstance(kinds, list) or len(kinds) != layers:
        raise CatalogError(f"config field 'layer_types' must list one kind per layer ({layers})")
    out = []
    for kind in kinds:
        if kind == "full_attention":
            out.append("full")
        elif kind == "sliding_attention":
            if not window:
                raise CatalogError("config has sliding_attention layers but no 'sliding_window' size")
            out.append("sliding")
        else:
            raise CatalogError(f"layer kind {kind!r} in 'layer_types' is not sized by cliffscope (full/sliding are)")
    return tuple(out) if "sliding" in out else ()


def list_models() -> list[str]:
    """Catalog names: every directory under ``data/models`` holding a ``config.json``, sorted."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.parent.name for p in MODELS_DIR.glob("*/config.json"))


_ALIASES = {
    "8b": "DeepSeek-R1-Distill-Llama-8B",
    "14b": "DeepSeek-R1-Distill-Qwen-14B",
    "32b": "DeepSeek-R1-Distill-Qwen-32B",
    "70b": "DeepSeek-R1-Distill-Llama-70B",
    "405b": "Llama-3.1-405B",
    "r1": "DeepSeek-R1",
    "671b": "DeepSeek-R1",
}


def resolve_model_path(name_or_path: str) -> Path:
    """A catalog name (case-insensitive, short aliases like ``32B``), a model directory, or a ``config.json`` path."""
    text = str(name_or_path).strip()
    if not text:
        raise CatalogError("model is empty: give a catalog name (see `list_models()`) or a path to a config.json")
    direct = MODELS_DIR / text / "config.json"
    if "/" not in text and "\\" not in text and text not in {".", ".."} and direct.is_file():
        return direct  # the catalog name as spelled: one stat instead of listing every model (memory_plan's budget)
    names = {n.lower(): n for n in list_models()}
    key = _ALIASES.get(text.lower(), text).lower()
    if key in names:
        return MODELS_DIR / names[key] / "config.json"
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path / "config.json"
    if path.is_file():
        return path
    raise CatalogError(
        f"model {text!r} is neither a catalog name ({', '.join(list_models())}) nor an existing config.json path"
    )


@lru_cache(maxsize=256)
def _load_model_cached(path: str, mtime_ns: int) -> ModelSpec:
    raw = Path(path).read_bytes()
    try:
        cfg = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise CatalogError(f"{path}: a config.json must hold a JSON object")
    p = Path(path)
    name = p.parent.name if p.name == "config.json" else p.stem
    return model_from_config(cfg, name=name, sha256=hashlib.sha256(raw).hexdigest(), path=path)


def load_model(name_or_path: str | ModelSpec) -> ModelSpec:
    """Load a model by catalog name or config path; cached by path and modification time."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    path = resolve_model_path(name_or_path)
    return _load_model_cached(str(path), path.stat().st_mtime_ns)


# --------------------------------------------------------------------------------------------------------- devices

_GPU_FIELDS = {f for f in GpuSpec.__dataclass_fields__}


def _gpu_from_table(name: str, table: dict[str, Any], origin: str) -> GpuSpec:
    unknown = set(table) - _GPU_FIELDS
    if unknown:
        raise CatalogError(f"{origin}: device {name!r} has unknown keys {sorted(unknown)}")
    for key in ("memory_bytes", "hbm_bytes_per_s", "bf16_flops", "link_bytes_per_s", "source"):
        if key not in table:
            raise CatalogError(f"{origin}: device {name!r} lacks {key!r}")
    values = dict(table)
    values["name"] = str(table.get("name", name))
    values["memory_bytes"] = int(values["memory_bytes"])
    for key in ("hbm_bytes_per_s", "bf16_flops", "link_bytes_per_s"):
        if float(values[key]) <= 0:
            raise CatalogError(f"{origin}: device {name!r}: {key} must be positive")
    if values["memory_bytes"] <= 0:
        raise CatalogError(f"{origin}: device {name!r}: memory_bytes must be positive")
    if values.get("kind", "gpu") not in {"gpu", "cpu"}:
        raise CatalogError(f"{origin}: device {name!r}: kind must be 'gpu' or 'cpu'")
    return GpuSpec(**values)


@lru_cache(maxsize=8)
def _catalog(gpus_mtime: int, hosts_key: tuple[tuple[str, int], ...]) -> dict[str, GpuSpec]:
    out: dict[str, GpuSpec] = {}
    with GPUS_FILE.open("rb") as fh:
        for name, table in tomllib.load(fh).items():
            out[name] = _gpu_from_table(name, table, str(GPUS_FILE))
    for path_text, _ in hosts_key:
        path = Path(path_text)
        try:
            with path.open("rb") as fh:
                tables = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise CatalogError(f"{path}: not valid TOML ({exc})") from None
        for name, table in tables.items():
            out[name] = _gpu_from_table(name, table, str(path))
    return out


def _devices() -> dict[str, GpuSpec]:
    hosts: tuple[tuple[str, int], ...] = ()
    if HOSTS_DIR.is_dir():
        hosts = tuple(sorted((str(p), p.stat().st_mtime_ns) for p in HOSTS_DIR.glob("*.toml")))
    return _catalog(GPUS_FILE.stat().st_mtime_ns, hosts)


def list_gpus() -> list[str]:
    """Names of every catalog device: ``data/gpus.toml`` plus measured host profiles in ``data/hosts/*.toml``."""
    return list(_devices())


def load_gpu(name: str | GpuSpec) -> GpuSpec:
    """A catalog device by name (case-insensitive), or a TOML file path holding one device table."""
    if isinstance(name, GpuSpec):
        return name
    devices = _devices()
    by_lower = {k.lower(): v for k, v in devices.items()}
    key = str(name).strip().lower()
    if key in by_lower:
        return by_lower[key]
    aliases = {"a100": "a100-80gb", "cpu": "cpu-host", "h100-sxm": "h100", "h200-sxm": "h200"}
    if aliases.get(key) in by_lower:
        return by_lower[aliases[key]]
    path = Path(str(name))
    if path.suffix == ".toml" and path.is_file():
        with path.open("rb") as fh:
            tables = tomllib.load(fh)
        if len(tables) != 1:
            raise CatalogError(f"{path}: a device file must hold exactly one [name] table")
        ((dev_name, table),) = tables.items()
        return _gpu_from_table(dev_name, table, str(path))
    raise CatalogError(
        f"gpu {name!r} is not in the catalog ({', '.join(devices)}); or give --gpu-mem-gib for a custom one"
    )


def custom_gpu(
    memory_gib: float,
    base: str | GpuSpec = "H100",
    hbm_bytes_per_s: float | None = None,
    bf16_flops: float | None = None,
    link_bytes_per_s: float | None = None,
) -> GpuSpec:
    """A device given by its memory; bandwidth and FLOPS default to ``base``'s so the step model stays plausible."""
    if not (isinstance(memory_gib, int | float) and math.isfinite(memory_gib) and memory_gib > 0):
        raise CatalogError(f"gpu_mem_gib must be a positive number of GiB, got {memory_gib!r}")
    ref = load_gpu(base)
    return replace(
        ref,
        name=f"custom-{memory_gib:g}GiB",
        memory_bytes=int(memory_gib * GIB),
        hbm_bytes_per_s=hbm_bytes_per_s or ref.hbm_bytes_per_s,
        bf16_flops=bf16_flops or ref.bf16_flops,
        link_bytes_per_s=link_bytes_per_s or ref.link_bytes_per_s,
        source=f"custom device: {memory_gib:g} GiB given by the user; other figures from {ref.name} ({ref.source})",
    )


def without_peer_to_peer(device: GpuSpec) -> GpuSpec:
    """The device on a host whose GPUs cannot reach each other's memory (a container or VM that hides peer access, a
    board without NVLink or PCIe P2P). vLLM then logs "Custom allreduce is disabled because your platform lacks GPU
    P2P capability" and leaves every collective to NCCL, which stages it through host memory: TP all-reduces and PP
    hand-offs cross each GPU's PCIe link instead of NVLink, and no custom all-reduce buffers are allocated."""
    if not device.peer_to_peer:
        return device
    pcie = device.pcie_bytes_per_s
    if pcie <= 0:
        raise CatalogError(
            f"gpu {device.name!r}: without peer access its collectives cross PCIe, and the catalog states no PCIe "
            "bandwidth for it: add pcie_bytes_per_s (one direction, from its datasheet) to its table in data/gpus.toml"
        )
    return replace(
        device,
        peer_to_peer=False,
        link_bytes_per_s=pcie,
        source=f"{device.source}; no GPU peer-to-peer: collectives cross PCIe ({pcie / 1e9:g} GB/s each way)",
    )


def resolve_device(gpu: str | GpuSpec, gpu_mem_gib: float | None = None, peer_to_peer: bool = True) -> GpuSpec:
    """The scenario's device: a catalog entry, or a custom one by memory (based on the named GPU, else H100);
    ``peer_to_peer`` False when the scenario's GPUs have no peer access (``without_peer_to_peer``)."""
    device = _named_device(gpu, gpu_mem_gib)
    return device if peer_to_peer else without_peer_to_peer(device)


def _named_device(gpu: str | GpuSpec, gpu_mem_gib: float | None) -> GpuSpec:
    if isinstance(gpu, GpuSpec):
        return gpu
    if gpu_mem_gib is not None:
        base = "H100" if str(gpu).strip().lower() in {"", "custom"} else gpu
        return custom_gpu(gpu_mem_gib, base=base)
    if str(gpu).strip().lower() == "custom":
        raise CatalogError("a custom gpu needs its memory: give --gpu-mem-gib")
    return load_gpu(gpu)
