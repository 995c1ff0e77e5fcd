"""Memory model: weights and KV per device for a DP×TP×PP layout, and the KV capacity vLLM (v1) would report.

vLLM's rule, reproduced here (``gpu_worker.determine_available_memory`` and ``kv_cache_utils``):

    requested = device memory × gpu_memory_utilization
    available = requested − weights − peak activation of a profiling pass at max_num_batched_tokens − non-torch
    blocks    = available // page_bytes_per_layer // layers_on_this_device   (minimum over PP stages)
    tokens    = blocks × block_size                      ("GPU KV cache size: N tokens")
    max concurrency at L = blocks / ceil(L / block_size) ("Maximum concurrency for L tokens per request")

``kv_cache_memory_bytes`` replaces ``available`` (as vLLM's flag of that name, and the CPU backend's fixed pool).
One block is vLLM's reserved null block, so the scheduler can hand out ``blocks − 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.catalog import (
    DTYPE_BYTES,
    GIB,
    QUANT_WEIGHT_BYTES,
    QUANTIZATIONS,
    CatalogError,
    GpuSpec,
    ModelSpec,
    load_gpu,
    load_model,
    resolve_device,
)
from engine.scenario import Scenario

PAPER_KV_BYTES_PER_TOKEN = {"Llama-3.1-405B": 1.05e6}  # the paper's §II-B figure, for the explanation below
MULTI_DEVICE_EXTRA_NON_TORCH_BYTES = GIB // 2  # NCCL and custom all-reduce buffers when a replica spans devices


@dataclass(frozen=True)
class StageMemory:
    """One pipeline stage's device: what its layers and buffers take and how many KV blocks remain."""

    stage: int
    num_layers: int
    weights_bytes: int
    activation_bytes: int
    available_kv_bytes: int
    kv_blocks: int


@dataclass(frozen=True)
class MemoryPlan:
    model: str
    gpu: str
    dp: int
    tp: int
    pp: int
    block_size: int
    max_model_len: int
    weight_dtype: str  # effective: bfloat16, fp8, awq, ...
    kv_dtype_bytes: float
    weights_bytes_total: int
    weights_bytes_per_device: int  # the heaviest device of a replica
    activation_bytes_per_device: int
    non_torch_bytes_per_device: int
    requested_bytes_per_device: int  # memory × gpu_memory_utilization
    kv_bytes_per_token: int  # whole model, all layers, at the KV dtype
    kv_bytes_per_token_per_device: int  # on the binding device (its layers, its KV heads)
    kv_page_bytes_per_layer: int
    free_bytes_per_device: int  # memory left for the KV cache on the binding device (may be negative)
    kv_blocks: int  # as vLLM reports them (includes the null block)
    usable_kv_blocks: int  # what the scheduler can allocate: kv_blocks − 1
    kv_capacity_tokens: int  # per replica, as vLLM reports "KV cache size: N tokens"
    max_concurrency: float  # requests of max_model_len that fit at once, per replica
    feasible: bool
    reason: str  # "" when feasible
    stages: tuple[StageMemory, ...] = field(default=(), repr=False)
    notes: tuple[str, ...] = ()

    @property
    def kv_capacity_tokens_total(self) -> int:
        return self.kv_capacity_tokens * self.dp

    def as_dict(self) -> dict[str, object]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "stages"}
        out["notes"] = list(self.notes)
        out["kv_capacity_tokens_total"] = self.kv_capacity_tokens_total
        return out


def pp_layer_split(num_layers: int, pp: int) -> list[int]:
    """Layers per stage as vLLM's ``get_pp_indices`` splits them: the remainder goes to the stages before the last."""
    base = num_layers // pp
    parts = [base] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    return parts


def weight_dtype_of(model: ModelSpec, dtype: str, quantization: str) -> tuple[str, float, float]:
    """(name, bytes per quantized linear weight, bytes per 16-bit tensor). ``none`` keeps the checkpoint's format."""
    if quantization not in QUANTIZATIONS:
        raise CatalogError(f"quantization {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
    act_bytes = float(DTYPE_BYTES.get(dtype, 0))
    if act_bytes == 0:
        raise CatalogError(f"dtype {dtype!r} is not one of auto, bfloat16, float16, float32")
    if dtype in {"float32", "fp32", "float"}:
        act_bytes = 4
    elif dtype == "auto":
        act_bytes = 4 if model.torch_dtype == "float32" else 2
    quant = quantization if quantization != "none" else model.checkpoint_quantization
    if quant in QUANT_WEIGHT_BYTES:
        return quant, QUANT_WEIGHT_BYTES[quant], act_bytes
    name = "float32" if act_bytes == 4 else (dtype if dtype != "auto" else model.torch_dtype)
    return name, act_bytes, act_bytes


def kv_dtype_bytes_of(kv_cache_dtype: str, act_bytes: float) -> float:
    if kv_cache_dtype == "auto":
        return act_bytes
    if kv_cache_dtype.startswith("fp8"):
        return 1.0
    raise CatalogError(f"kv_cache_dtype {kv_cache_dtype!r} is not one of auto, fp8, fp8_e4m3, fp8_e5m2")


def kv_heads_per_device(model: ModelSpec, tp: int) -> int:
    """KV heads each TP rank caches: sharded, replicated when TP exceeds them; MLA's latent is on every rank."""
    if model.is_mla:
        return 1
    return max(1, model.num_kv_heads // tp)


def kv_bytes_per_token_per_layer_per_device(model: ModelSpec, tp: int, kv_bytes: float) -> int:
    if model.is_mla:
        return int((model.kv_lora_rank + model.qk_rope_head_dim) * kv_bytes)
    return int(2 * kv_heads_per_device(model, tp) * model.head_dim * kv_bytes)


def layer_weight_bytes(model: ModelSpec, tp: int, quant_bytes: float, act_bytes: float, moe: bool) -> float:
    """One decoder layer's weights on one TP rank (linear layers sharded; norms, routers, MLA down-projections not)."""
    c = model.params
    h = model.hidden_size
    if model.is_mla:
        replicated = h * model.q_lora_rank + h * (model.kv_lora_rank + model.qk_rope_head_dim)
        sharded = c.attention_per_layer - replicated
        attn = replicated * quant_bytes + sharded * quant_bytes / tp
    else:
        q_o = 2 * h * model.num_heads * model.head_dim
        kv = 2 * h * model.head_dim * math.ceil(model.num_kv_heads / tp) * tp  # replicated heads when tp > kv heads
        attn = (q_o + kv) * quant_bytes / tp
    mlp = (c.moe_routed_per_layer + c.moe_shared_per_layer) if moe else c.dense_mlp_per_layer
    router = c.router_per_layer if moe else 0
    return attn + mlp * quant_bytes / tp + (router + c.norm_per_layer) * act_bytes


def activation_peak_bytes(
    model: ModelSpec, tp: int, max_num_batched_tokens: int, max_num_seqs: int, act_bytes: float, last_stage: bool
) -> int:
    """Peak of vLLM's profiling forward pass: live buffers of one layer at max_num_batched_tokens, plus the sampler.

    Per token: residual + normed hidden + attention output (≈4·h), the QKV output, and the MLP's gate/up output and
    activation (3·intermediate/TP) — or, for MoE, the fused-MoE caches (top-k copies of the hidden state). The last
    stage also holds fp32 logits (and a softmax copy) for min(max_num_seqs, tokens) dummy requests.
    """
    t = max_num_batched_tokens
    h = model.hidden_size
    if model.is_mla:
        qkv = model.num_heads * (model.qk_nope_head_dim + model.qk_rope_head_dim + model.v_head_dim) / tp
    else:
        qkv = (model.num_heads + 2 * model.num_kv_heads) * model.head_dim / tp
    mlp = 3 * model.intermediate_size / tp
    if model.is_moe:
        moe = model.experts_per_token * (h + 3 * model.moe_intermediate_size / tp)
        mlp = max(mlp, moe)
    per_token = (4 * h + qkv + mlp) * act_bytes
    sampler = min(max_num_seqs, t) * model.vocab_size * 4 * 2 if last_stage else 0
    return int(t * per_token + sampler)


def memory_plan(
    model: ModelSpec | str,
    gpu: GpuSpec | str,
    dp: int = 1,
    tp: int = 1,
    pp: int = 1,
    gpu_memory_utilization: float = 0.9,
    block_size: int = 16,
    max_model_len: int | None = None,
    max_num_batched_tokens: int = 8192,
    dtype: str = "bfloat16",
    quantization: str = "none",
    kv_cache_dtype: str = "auto",
    kv_cache_memory_bytes: int | None = None,
    max_num_seqs: int = 1024,
) -> MemoryPlan:
    """Size one layout. Infeasible layouts still report every figure that can be computed, with the reason."""
    m = load_model(model)
    g = load_gpu(gpu)
    for name, value in (("dp", dp), ("tp", tp), ("pp", pp), ("block_size", block_size)):
        if value < 1:
            raise CatalogError(f"{name} must be at least 1, got {value}")
    max_len = int(max_model_len or m.max_position_embeddings)
    wname, qbytes, abytes = weight_dtype_of(m, dtype, quantization)
    kvb = kv_dtype_bytes_of(kv_cache_dtype, abytes)
    reasons: list[str] = []
    notes: list[str] = []

    if m.num_heads % tp:
        reasons.append(f"{m.num_heads} attention heads are not divisible by TP={tp}")
    elif not m.is_mla and m.num_kv_heads % tp and tp % m.num_kv_heads:
        reasons.append(f"{m.num_kv_heads} KV heads and TP={tp} do not divide one another")
    if pp > m.num_layers:
        reasons.append(f"PP={pp} exceeds the model's {m.num_layers} layers")
    if tp > g.gpus_per_node and g.kind == "gpu":
        reasons.append(f"TP={tp} spans more than one {g.name} node of {g.gpus_per_node}")
    if max_len > m.max_position_embeddings:
        reasons.append(f"max_model_len {max_len} exceeds the model's {m.max_position_embeddings} positions")

    per_layer_kv = kv_bytes_per_token_per_layer_per_device(m, tp, kvb)
    page = block_size * per_layer_kv
    requested = int(g.memory_bytes * gpu_memory_utilization)
    non_torch = 0
    if kv_cache_memory_bytes is None:
        non_torch = g.non_torch_bytes + (MULTI_DEVICE_EXTRA_NON_TORCH_BYTES if tp * pp > 1 and g.kind == "gpu" else 0)

    splits = pp_layer_split(m.num_layers, min(pp, m.num_layers))
    embed_bytes = m.params.embedding * abytes / tp
    head_bytes = (m.params.lm_head + m.params.final_norm * tp) * abytes / tp
    stages: list[StageMemory] = []
    first_layer = 0
    for s, n_layers in enumerate(splits):
        weights = 0.0
        for layer in range(first_layer, first_layer + n_layers):
            weights += layer_weight_bytes(m, tp, qbytes, abytes, moe=layer >= m.num_dense_layers)
        first_layer += n_layers
        if s == 0:
            weights += embed_bytes
        if s == len(splits) - 1:
            weights += head_bytes if m.params.lm_head else 0
        last = s == len(splits) - 1
        act = activation_peak_bytes(m, tp, max_num_batched_tokens, max_num_seqs, abytes, last)
        if kv_cache_memory_bytes is not None:
            avail = int(kv_cache_memory_bytes)
            if weights + avail > g.memory_bytes:
                reasons.append(
                    f"stage {s}: weights {weights / GIB:.1f} GiB + KV pool {avail / GIB:.1f} GiB exceed the "
                    f"device's {g.memory_gib:.1f} GiB"
                )
        else:
            avail = int(requested - weights - act - non_torch)
        blocks = max(0, avail // page // n_layers) if n_layers else 0
        stages.append(StageMemory(s, n_layers, int(weights), int(act), int(avail), int(blocks)))

    binding = min(stages, key=lambda st: st.kv_blocks)
    heaviest = max(stages, key=lambda st: st.weights_bytes)
    total_weights = int(
        sum(layer_weight_bytes(m, 1, qbytes, abytes, moe=i >= m.num_dense_layers) for i in range(m.num_layers))
        + (m.params.embedding + m.params.lm_head + m.params.final_norm) * abytes
    )
    if heaviest.weights_bytes > requested and kv_cache_memory_bytes is None:
        reasons.append(
            f"weights need {heaviest.weights_bytes / GIB:.1f} GiB per device but {g.name} × "
            f"{gpu_memory_utilization:g} gives {requested / GIB:.1f} GiB: add TP/PP or quantize"
        )
    elif binding.available_kv_bytes <= 0:
        reasons.append(
            f"no memory left for the KV cache on stage {binding.stage} (weights {binding.weights_bytes / GIB:.1f} "
            f"GiB + activations {binding.activation_bytes / GIB:.1f} GiB fill the {requested / GIB:.1f} GiB budget)"
        )
    kv_blocks = binding.kv_blocks
    blocks_per_request = math.ceil(max_len / block_size)
    if not reasons and kv_blocks == 0:
        reasons.append(
            f"the KV memory ({binding.available_kv_bytes / GIB:.3f} GiB per device) holds no block of "
            f"{page * binding.num_layers:,} bytes: give it more memory"
        )
    if not reasons and kv_blocks < blocks_per_request:
        est = kv_blocks * block_size
        reasons.append(
            f"one request of max_model_len {max_len} needs {blocks_per_request} KV blocks but only {kv_blocks} fit "
            f"(vLLM would refuse to start); lower max_model_len to at most {est}"
        )
    kv_per_token = m.kv_bytes_per_token(kvb)
    paper = PAPER_KV_BYTES_PER_TOKEN.get(m.name)
    if paper and kvb == 2:
        notes.append(
            f"computed KV per token {kv_per_token:,} bytes vs the paper's ≈{paper:,.0f}: the paper's figure matches "
            f"the first published config with {m.num_kv_heads * 2} KV heads; the current config has {m.num_kv_heads}"
        )
    return MemoryPlan(
        model=m.name,
        gpu=g.name,
        dp=dp,
        tp=tp,
        pp=pp,
        block_size=block_size,
        max_model_len=max_len,
        weight_dtype=wname,
        kv_dtype_bytes=kvb,
        weights_bytes_total=total_weights,
        weights_bytes_per_device=heaviest.weights_bytes,
        activation_bytes_per_device=binding.activation_bytes,
        non_torch_bytes_per_device=non_torch,
        requested_bytes_per_device=requested if kv_cache_memory_bytes is None else int(kv_cache_memory_bytes),
        kv_bytes_per_token=kv_per_token,
        kv_bytes_per_token_per_device=per_layer_kv * binding.num_layers,
        kv_page_bytes_per_layer=page,
        free_bytes_per_device=binding.available_kv_bytes,
        kv_blocks=kv_blocks,
        usable_kv_blocks=max(0, kv_blocks - 1),
        kv_capacity_tokens=kv_blocks * block_size,
        max_concurrency=kv_blocks / blocks_per_request,
        feasible=not reasons,
        reason="; ".join(dict.fromkeys(reasons)),
        stages=tuple(stages),
        notes=tuple(notes),
    )


def memory_plan_for(scenario: Scenario) -> MemoryPlan:
    """``memory_plan`` with every argument taken from a scenario (model, device, layout, engine settings)."""
    return memory_plan(
        load_model(scenario.model),
        resolve_device(scenario.gpu, scenario.gpu_mem_gib),
        dp=scenario.dp,
        tp=scenario.tp,
        pp=scenario.pp,
        gpu_memory_utilization=scenario.gpu_memory_utilization,
        block_size=scenario.block_size,
        max_model_len=scenario.max_model_len,
        max_num_batched_tokens=scenario.max_num_batched_tokens,
        dtype=scenario.dtype,
        quantization=scenario.quantization,
        kv_cache_dtype=scenario.kv_cache_dtype,
        kv_cache_memory_bytes=scenario.kv_cache_memory_bytes,
        max_num_seqs=scenario.max_num_seqs,
    )
