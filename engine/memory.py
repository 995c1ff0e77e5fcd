"""Memory model: how vLLM sizes its KV pool on a GPU, per device of a DP×TP×PP layout.

The rule follows vLLM V1's ``gpu_worker.determine_available_memory`` (installed vllm 0.32.0 sources; version
switches in ``engine.vllm_rules``)::

    requested  = ceil(total device memory × gpu_memory_utilization)          (v1/worker/utils.request_memory)
    available  = requested − weights − activation peak − non-torch memory
                 − CUDA-graph memory (only from 0.21, when it is profiled before KV sizing)
    blocks     = available // (page bytes × layers per KV group)             (kv_cache_utils)
    tokens     = blocks × block_size                       ("GPU KV cache size: N tokens")

The parts, each a small function below: ``stage_weight_bytes`` (weights by quantization scheme, which tensors stay
16-bit), ``activation_peak`` (the profile run at ``max_num_batched_tokens`` and the sampler's dummy batch),
``non_torch_bytes`` (NCCL and custom all-reduce buffers by TP/PP), ``cudagraph_bytes_estimate`` and ``kv_layout``
(page size, MLA latent on every TP rank, sliding-window and full-attention KV groups, block size per backend).
``kv_cache_memory_bytes`` replaces ``available`` (vLLM's flag of that name, and the CPU backend's fixed pool).
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
    WeightScheme,
    load_gpu,
    load_model,
    mxfp4_kernel_of,
    mxfp4_scheme,
)
from engine.scenario import Scenario
from engine.vllm_rules import (
    DEFAULT_VLLM_VERSION,
    VllmRules,
    scheduler_defaults,
    uses_model_runner_v2,
    vllm_rules,
)

PAPER_KV_BYTES_PER_TOKEN = {"Llama-3.1-405B": 1.05e6}  # the paper's §II-B figure, for the explanation below

# Live bytes per logit in the sampler's dummy run (V1 ``_dummy_sampler_run``: max_num_seqs rows × vocab, with top-k
# and top-p on, which takes the sort-based path): bf16 logits (2) + fp32 copy (4) + sorted values (4) + int64 sort
# indices (8) + softmax (4) + cumulative sum (4) + scattered logits (4) + probabilities (4) + exponential noise (4)
# ≈ 38 bytes. Checked against llm-d's v0.11.0 H100 logs, where this pass sets the peak ("torch peak memory
# increase"): 5.56 GiB for Qwen3-0.6B (1024 × 151,936 logits → 38.4 B), 4.76 GiB for Llama-3.1-8B (128,256 → 38.9),
# 7.38 GiB for gpt-oss-20b (201,088 → 38.5). An estimate within about 2 % of those three.
SAMPLER_BYTES_PER_LOGIT = 38.4
# Non-torch memory the profiler sees grow from worker start (cuBLAS/cuBLASLt workspaces, attention-backend buffers):
# 0.13 GiB at TP=1 for every model in llm-d's v0.11.0 H100 logs; an estimate from those measurements.
BASE_NON_TORCH_BYTES = int(0.13 * GIB)
# Added when a replica spans devices (NCCL communicator buffers, custom all-reduce's registered buffers): those logs
# show 0.54–0.55 GiB at TP=2, i.e. +0.42 GiB; held constant for larger groups (an estimate: no TP>2 breakdown
# was found in public logs).
COLLECTIVE_NON_TORCH_BYTES = int(0.42 * GIB)


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
class ActivationPeak:
    """Peak of the profile run above the weights: the forward pass or the sampler's dummy batch, whichever is larger."""

    forward_bytes: int
    sampler_bytes: int

    @property
    def peak_bytes(self) -> int:
        return max(self.forward_bytes, self.sampler_bytes)


@dataclass(frozen=True)
class KvLayout:
    """How vLLM lays the KV cache out on one device (``kv_cache_utils``)."""

    block_size: int
    page_bytes_per_layer: int  # one block of one layer
    group_size: int  # layers sharing one block id (all layers when there is one attention kind)
    num_groups: int  # KV cache groups (full-attention and sliding-window layers form separate ones)
    blocks_per_request: int  # blocks one request of max_model_len takes across all groups


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
    free_bytes_per_device: int  # memory left for the KV cache on the binding device ("Available KV cache memory")
    kv_blocks: int  # as vLLM reports them (includes the null block); full-attention-equivalent for hybrid models
    usable_kv_blocks: int  # what the scheduler can allocate: kv_blocks − 1
    kv_capacity_tokens: int  # per replica, as vLLM reports "KV cache size: N tokens"
    max_concurrency: float  # requests of max_model_len that fit at once, per replica
    feasible: bool
    reason: str  # "" when feasible
    stages: tuple[StageMemory, ...] = field(default=(), repr=False)
    notes: tuple[str, ...] = ()
    vllm_version: str = DEFAULT_VLLM_VERSION
    max_num_seqs: int = 0
    max_num_batched_tokens: int = 0
    cudagraph_bytes_per_device: int = 0  # estimate; subtracted before KV sizing only from vLLM 0.21
    cudagraph_subtracted: bool = False
    sampler_bytes_per_device: int = 0
    forward_bytes_per_device: int = 0
    kv_groups: int = 1
    model_runner: str = "v1"  # "v2" when vLLM runs Model Runner V2 for this launch (engine.vllm_rules)

    @property
    def kv_capacity_tokens_total(self) -> int:
        return self.kv_capacity_tokens * self.dp

    def as_dict(self) -> dict[str, object]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "stages"}
        out["notes"] = list(self.notes)
        out["kv_capacity_tokens_total"] = self.kv_capacity_tokens_total
        return out

    def startup_lines(self) -> list[str]:
        """The breakdown vLLM logs at start-up, in its own words, for the binding device."""
        g = 1024**3
        lines = [
            f"Model loading took {self.weights_bytes_per_device / g:.2f} GiB memory",
            f"activation peak (torch peak memory increase) {self.activation_bytes_per_device / g:.2f} GiB "
            f"(forward {self.forward_bytes_per_device / g:.2f}, sampler {self.sampler_bytes_per_device / g:.2f})",
            f"non-torch memory {self.non_torch_bytes_per_device / g:.2f} GiB",
            f"CUDA graph memory (estimate) {self.cudagraph_bytes_per_device / g:.2f} GiB "
            + ("subtracted before KV sizing" if self.cudagraph_subtracted else "not subtracted"),
            f"Available KV cache memory: {self.free_bytes_per_device / g:.2f} GiB",
            f"GPU KV cache size: {self.kv_capacity_tokens:,} tokens",
            f"Maximum concurrency for {self.max_model_len:,} tokens per request: {self.max_concurrency:.2f}x",
        ]
        return lines


# ------------------------------------------------------------------------------------------------ layout helpers


def pp_layer_split(num_layers: int, pp: int) -> list[int]:
    """Layers per stage as vLLM's ``get_pp_indices`` splits them: the remainder goes to the stages before the last."""
    base = num_layers // pp
    parts = [base] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    return parts


def activation_dtype_bytes(model: ModelSpec, dtype: str) -> float:
    """Bytes of the 16/32-bit tensors: the --dtype flag, or the checkpoint's torch_dtype under ``auto``."""
    if DTYPE_BYTES.get(dtype, 0) == 0 or dtype.startswith("fp8"):
        raise CatalogError(f"dtype {dtype!r} is not one of auto, bfloat16, float16, float32")
    if dtype in {"float32", "fp32", "float"}:
        return 4
    if dtype == "auto":
        return 4 if model.torch_dtype == "float32" else 2
    return 2


def effective_scheme(model: ModelSpec, quantization: str, mxfp4_kernel: str = "triton") -> WeightScheme:
    """The checkpoint's scheme (an MXFP4 one as ``mxfp4_kernel`` pads it), or the --quantization flag's on a 16-bit
    checkpoint (vLLM quantizes it online)."""
    if quantization not in QUANTIZATIONS:
        raise CatalogError(f"quantization {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
    ckpt = model.weight_scheme
    if ckpt.method == "mxfp4":
        return mxfp4_scheme(mxfp4_kernel)
    if quantization == "none" or ckpt.method != "none":
        return ckpt
    per = 1.0 if quantization == "fp8" else QUANT_WEIGHT_BYTES[quantization]  # online fp8: per-tensor scales
    return WeightScheme(quantization, per, per, detail="online" if quantization == "fp8" else "group 128")


def weight_dtype_name(model: ModelSpec, scheme: WeightScheme, act: float, dtype: str) -> str:
    """The plan's name for its weights: the quantization method, else the 16-bit (or float32) dtype they load in."""
    if scheme.method != "none":
        return scheme.method
    return "float32" if act == 4 else (dtype if dtype != "auto" else model.torch_dtype)


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


# ------------------------------------------------------------------------------------------------------- weights


def _attention_bytes(model: ModelSpec, tp: int, per: float, act: float) -> float:
    """One layer's attention projections on one TP rank; MLA's down-projections are replicated on every rank.

    MLA also keeps 16-bit copies of ``kv_b_proj`` split into W_UK/W_UV for the absorbed decode path
    (``MLACommonImpl.process_weights_after_loading`` dequantizes FP8 weights into them), sharded by heads.
    """
    c = model.params
    h = model.hidden_size
    if model.is_mla:
        replicated = h * model.q_lora_rank + h * (model.kv_lora_rank + model.qk_rope_head_dim)
        sharded = c.attention_per_layer - replicated
        kv_b = model.kv_lora_rank * model.num_heads * (model.qk_nope_head_dim + model.v_head_dim)
        return replicated * per + sharded * per / tp + kv_b * act / tp
    q_o = 2 * h * model.num_heads * model.head_dim
    kv = 2 * h * model.head_dim * math.ceil(model.num_kv_heads / tp) * tp  # replicated heads when tp > kv heads
    return (q_o + kv) * per / tp


def layer_bytes(model: ModelSpec, tp: int, scheme: WeightScheme, act: float, moe: bool) -> float:
    """One decoder layer on one TP rank: quantized linears by the scheme; norms, biases, router in 16-bit."""
    c = model.params
    quantized = scheme.method != "none"
    lin = scheme.linear_bytes if quantized else act
    attn_per = lin if scheme.attention_quantized else act
    attn = _attention_bytes(model, tp, attn_per, act)
    if moe:
        mlp = c.moe_shared_per_layer * lin / tp + routed_expert_bytes(model, tp, scheme, act)
        router = c.router_per_layer * act
    else:
        mlp = c.dense_mlp_per_layer * lin / tp
        router = 0
    return attn + mlp + router + c.norm_per_layer * act


def routed_expert_bytes(model: ModelSpec, tp: int, scheme: WeightScheme, act: float) -> float:
    """One MoE layer's routed experts on one TP rank, as the scheme stores them (MXFP4 padded for its kernel): what
    the memory plan loads and what a decode step reads of them when every expert is touched (engine.perf)."""
    experts = model.params.moe_routed_per_layer * (scheme.expert_bytes if scheme.method != "none" else act)
    if scheme.expert_intermediate_align > 1:
        per_rank = model.moe_intermediate_size / tp
        padded = math.ceil(per_rank / scheme.expert_intermediate_align) * scheme.expert_intermediate_align
        experts *= padded / per_rank
    if scheme.expert_hidden_align > 1:
        h = model.hidden_size
        experts *= math.ceil(h / scheme.expert_hidden_align) * scheme.expert_hidden_align / h
    return experts / tp


def _rope_cache_bytes(model: ModelSpec, act: float) -> float:
    """The rotary cos/sin cache every rank holds: max positions × rotary dim in the model dtype.

    Llama-3.1-8B: 131,072 × 128 × 2 B = 32 MiB, the gap between 8.03 B parameters × 2 B (14.96 GiB) and the
    14.99 GiB "Model loading took" of vLLM's logs.
    """
    rot = model.qk_rope_head_dim if model.is_mla else model.head_dim
    return model.max_position_embeddings * rot * act


def _layer_values(model: ModelSpec, tp: int, scheme: WeightScheme, act: float, first: int, n: int) -> list[float]:
    """Each layer's bytes in order: a layer is dense or MoE, so two ``layer_bytes`` calls serve every layer.

    Summed in the same order as before, so every total is bit-identical; calling ``layer_bytes`` per layer was 40 %
    of ``memory_plan``'s time on a 61-layer model (tests/bench ``test_memory_one_layout_under_1ms``).
    """
    if n <= 0:
        return []
    dense = model.num_dense_layers  # the first ``dense`` layers are dense, the rest MoE: the two ends cover both kinds
    values = {moe: layer_bytes(model, tp, scheme, act, moe=moe) for moe in {first >= dense, first + n - 1 >= dense}}
    return [values[i >= dense] for i in range(first, first + n)]


def stage_weight_bytes(
    model: ModelSpec, tp: int, scheme: WeightScheme, act: float, first_layer: int, num_layers: int, last: bool
) -> float:
    """Weights on one device of a stage: its layers, the embedding on the first stage, the LM head on the last."""
    total = sum(_layer_values(model, tp, scheme, act, first_layer, num_layers))
    if first_layer == 0:
        total += model.params.embedding * act / tp
    if last:
        head = model.params.lm_head if model.params.lm_head else (model.params.embedding if first_layer else 0)
        total += head * act / tp + model.params.final_norm * act
    return total + _rope_cache_bytes(model, act)


# --------------------------------------------------------------------------------------------------- activations


def forward_bytes_per_token(model: ModelSpec, tp: int, act: float, eager: bool = False) -> float:
    """Live bytes per token of one layer's forward pass: hidden + residual and the larger of attention and MLP.

    Attention: the fused QKV output and the attention output; dense MLP: gate_up output and the activated half;
    MoE: the fused-MoE caches (top-k copies of gate_up, activation and down outputs) and fp32 router logits.
    ``eager`` (V0, no torch.compile): the layer's input, its normed copy and the residual are all alive at the MLP,
    one hidden-size buffer more than V1's compiled graph keeps. Checked against V0 logs of Llama-3.1-8B on an RTX
    3090 (vllm#10517): peak_torch_memory − weights = 2.07 GiB at 20,000 tokens and 2.99 GiB at 29,000, i.e.
    110.6–111.1 KB/token; the eager count gives (3 × 4096 + 3 × 14336) × 2 B = 110.6 KB.
    """
    h = model.hidden_size
    if model.is_mla:
        q = model.num_heads * (model.qk_nope_head_dim + model.qk_rope_head_dim) / tp
        attn = q + model.kv_lora_rank + model.qk_rope_head_dim + model.num_heads * model.v_head_dim / tp
    else:
        attn = (2 * model.num_heads + 2 * model.num_kv_heads) * model.head_dim / tp
    mlp = 3 * model.intermediate_size / tp
    if model.is_moe:
        k = model.experts_per_token
        moe = k * (3 * model.moe_intermediate_size / tp + h) + model.num_experts * 4 / act
        shared = 3 * (model.num_shared_experts * model.moe_intermediate_size + model.shared_expert_intermediate_size)
        mlp = max(mlp if model.num_dense_layers else 0.0, moe + shared / tp)
    return ((3 if eager else 2) * h + max(attn, mlp)) * act


def activation_peak(
    model: ModelSpec,
    tp: int,
    act: float,
    rules: VllmRules,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    last_stage: bool,
    chunked: bool,
    sampler: str = "pytorch",
    runner: str = "v1",
) -> ActivationPeak:
    """The profile run's peak above the weights (vLLM's "torch peak memory increase").

    V1 (``gpu_model_runner.profile_run``): a forward pass of ``max_num_batched_tokens`` tokens, then on the last
    stage ``_dummy_sampler_run`` on min(max_num_seqs, tokens) rows of full-vocab logits while the forward's hidden
    states are still alive. V0 (``worker.determine_num_available_blocks``): the same forward; its sampler runs only
    when no prompt was chunked (with chunked prefill the dummy prompts are partial and sample nothing). Model Runner
    V2 (``v1/worker/gpu/model_runner.py``): the same forward and dummy batch, but its sampler holds only the
    model-dtype logits (and their fp32 copy up to 0.26, ``VllmRules.v2_sampler_fp32_copy``) and samples them with
    the Gumbel kernel, without V1's sort buffers.
    """
    t = max_num_batched_tokens
    forward = t * forward_bytes_per_token(model, tp, act, eager=rules.engine == "v0")
    if not (last_stage and (rules.sampler_warmup_full_vocab or not chunked)):
        return ActivationPeak(int(forward), 0)
    rows = min(max_num_seqs, t)
    if runner == "v2":
        per_logit = act + (4.0 if rules.v2_sampler_fp32_copy else 0.0)
    elif sampler == "flashinfer":
        per_logit = rules.flashinfer_sampler_bytes_per_logit
    else:
        per_logit = rules.sampler_bytes_per_logit
    sampler_bytes = rows * model.vocab_size * per_logit + t * 2 * model.hidden_size * act
    return ActivationPeak(int(forward), int(sampler_bytes))


def non_torch_bytes(
    tp: int, pp: int, gpu: GpuSpec, rules: VllmRules | None = None, custom_all_reduce: bool = True
) -> int:
    """Memory outside PyTorch's allocator that grows during start-up (the CUDA context is in the baseline).

    By version (``VllmRules.non_torch_gib``): one device, a TP group (NCCL + custom all-reduce buffers), PP only.
    A TP group without custom all-reduce holds only NCCL's buffers on top of the one-device figure. A device whose
    catalog entry carries a measured multi-GPU figure (``multi_gpu_non_torch_gib``, from a log of vLLM ≥ 0.27, whose
    profile reports it as consumed memory minus weights) uses that figure for every TP/PP layout from 0.27 on.
    """
    if gpu.kind != "gpu":
        return 0
    if rules is None:
        return BASE_NON_TORCH_BYTES + (COLLECTIVE_NON_TORCH_BYTES if tp * pp > 1 else 0)
    if tp * pp > 1 and gpu.multi_gpu_non_torch_gib and rules.consumed_memory_accounting:
        return int(gpu.multi_gpu_non_torch_gib * GIB)
    single, tp_group, pp_only = rules.non_torch_gib
    if tp > 1 and not custom_all_reduce:
        return int((single + rules.nccl_only_non_torch_gib) * GIB)
    gib = tp_group if tp > 1 else pp_only if pp > 1 else single
    return int(gib * GIB)


def cudagraph_bytes_estimate(model: ModelSpec, tp: int, act: float, max_num_seqs: int) -> int:
    """CUDA-graph pool: the largest captured batch's forward working set (graphs share one pool).

    Capture sizes run up to min(512, 2 × max_num_seqs) tokens (``compilation_config.max_cudagraph_capture_size``).
    An estimate: llm-d's v0.11.0 logs show the free-memory change across capture between −0.88 and +1.03 GiB,
    which also holds allocator releases, so no public figure isolates the pool.
    """
    return int(min(512, 2 * max_num_seqs) * forward_bytes_per_token(model, tp, act))


# ---------------------------------------------------------------------------------------------------- KV layout


def mla_block_size(gpu: GpuSpec, rules: VllmRules, requested: int) -> tuple[int, str]:
    """MLA on Hopper/Blackwell under V1 runs FlashMLA, which forces 64-token blocks (``platforms/cuda.py``)."""
    if rules.engine == "v1" and gpu.compute_capability >= 9.0 and requested % 64:
        return 64, f"block size {requested} raised to 64: vLLM forces 64-token blocks for FlashMLA on MLA models"
    return requested, ""


def kv_layout(
    model: ModelSpec, tp: int, kv_bytes: float, block_size: int, layers: list[str], max_len: int, batched: int
) -> KvLayout:
    """Page size and KV groups of one device's layers (``_get_kv_cache_groups_uniform_page_size``).

    One attention kind: one group of all layers. Full + sliding-window layers (gpt-oss): groups of ``group_size``
    layers — the smaller kind's count, or the larger's when it is under 1.5× the smaller — share block ids; a
    request holds ceil(max_model_len / block) blocks per full group and ceil(min(window − 1 + batched tokens,
    max_model_len) / block) + 1 per sliding group (``SlidingWindowSpec.max_memory_usage_bytes``).
    """
    page = block_size * kv_bytes_per_token_per_layer_per_device(model, tp, kv_bytes)
    full = sum(1 for k in layers if k == "full")
    sliding = len(layers) - full
    full_blocks = math.ceil(max_len / block_size)
    if not sliding or not full:
        return KvLayout(block_size, page, len(layers), 1, full_blocks)
    small, large = min(full, sliding), max(full, sliding)
    group = large if large < small * 1.5 else small
    n_full, n_sliding = math.ceil(full / group), math.ceil(sliding / group)
    window_tokens = min(model.sliding_window - 1 + batched, max_len)
    per_request = n_full * full_blocks + n_sliding * (math.ceil(window_tokens / block_size) + 1)
    return KvLayout(block_size, page, group, n_full + n_sliding, per_request)


def _stage_kinds(model: ModelSpec, first: int, n: int) -> list[str]:
    kinds = model.layer_attention or ("full",) * model.num_layers
    return list(kinds[first : first + n])


# ------------------------------------------------------------------------------------------------------ the plan


def memory_plan(
    model: ModelSpec | str,
    gpu: GpuSpec | str,
    dp: int = 1,
    tp: int = 1,
    pp: int = 1,
    gpu_memory_utilization: float = 0.9,
    block_size: int | None = 16,
    max_model_len: int | None = None,
    max_num_batched_tokens: int | None = 8192,
    dtype: str = "bfloat16",
    quantization: str = "none",
    kv_cache_dtype: str = "auto",
    kv_cache_memory_bytes: int | None = None,
    max_num_seqs: int | None = 1024,
    vllm_version: str = DEFAULT_VLLM_VERSION,
    sampler: str = "pytorch",
    custom_all_reduce: bool = True,
    mxfp4_kernel: str | None = None,
) -> MemoryPlan:
    """Size one layout. ``None`` for a scheduler flag takes vLLM's default of ``vllm_version`` on this device.

    ``sampler``: "pytorch" (vLLM's sort-based top-k/top-p path) or "flashinfer" (used when the flashinfer package is
    installed; the start-up log says which). ``custom_all_reduce``: False when vLLM turned it off (no GPU
    peer-to-peer, a TP group across nodes, ``--disable-custom-all-reduce``). ``mxfp4_kernel``: the MoE kernel an MXFP4
    checkpoint runs on, "triton" or "marlin" (``engine.catalog.mxfp4_scheme``; the log says which), None: the
    device's (``engine.catalog.mxfp4_kernel_of``).

    Infeasible layouts still report every figure that can be computed, with the reason.
    """
    if sampler not in {"pytorch", "flashinfer"}:
        raise CatalogError(f"sampler {sampler!r} is not one of pytorch, flashinfer")
    m = load_model(model)
    g = load_gpu(gpu)
    rules = vllm_rules(vllm_version)
    for name, value in (("dp", dp), ("tp", tp), ("pp", pp), ("block_size", block_size or 1)):
        if value < 1:
            raise CatalogError(f"{name} must be at least 1, got {value}")
    max_len = int(max_model_len or m.max_position_embeddings)
    defaults = scheduler_defaults(rules, g, max_len)
    seqs = int(max_num_seqs or defaults.max_num_seqs)
    batched = int(max_num_batched_tokens or defaults.max_num_batched_tokens)
    chunked = batched < max_len
    scheme = effective_scheme(m, quantization, mxfp4_kernel or mxfp4_kernel_of(g))
    runner = model_runner_of(m, scheme, rules)
    act = activation_dtype_bytes(m, dtype)
    kvb = kv_dtype_bytes_of(kv_cache_dtype, act)
    notes: list[str] = []
    bs = int(block_size or 16)
    if m.is_mla:
        bs, why = mla_block_size(g, rules, bs)
        if why:
            notes.append(why)
    reasons = _layout_reasons(m, g, tp, pp, max_len)
    if sampler == "flashinfer":
        notes.append("sampler warm-up on FlashInfer's sort-free top-k/top-p path (10 B per logit)")
    if runner == "v2":
        notes.append(
            f"vLLM {rules.version} runs Model Runner V2 for {m.architecture}: dummy sampler on the model-dtype logits"
            + ("" if rules.v2_cudagraph_profiled else ", no CUDA-graph estimate before KV sizing")
        )
    if tp > 1 and not (custom_all_reduce and g.peer_to_peer):
        notes.append("custom all-reduce off (no peer access, across nodes, or disabled): NCCL-only non-torch memory")

    requested = math.ceil(g.memory_bytes * gpu_memory_utilization)
    fixed_pool = kv_cache_memory_bytes is not None
    non_torch = 0 if fixed_pool else non_torch_bytes(tp, pp, g, rules, custom_all_reduce and g.peer_to_peer)
    graphs = cudagraph_bytes_estimate(m, tp, act, seqs) if g.kind == "gpu" else 0
    graphs_profiled = rules.cudagraph_memory_subtracted and (runner == "v1" or rules.v2_cudagraph_profiled)
    graphs_taken = graphs if graphs_profiled and not fixed_pool else 0

    splits = pp_layer_split(m.num_layers, min(pp, m.num_layers))
    stages: list[StageMemory] = []
    layouts: list[KvLayout] = []
    peaks: list[ActivationPeak] = []
    first = 0
    for s, n_layers in enumerate(splits):
        last = s == len(splits) - 1
        weights = stage_weight_bytes(m, tp, scheme, act, first, n_layers, last)
        peak = activation_peak(m, tp, act, rules, batched, seqs, last, chunked, sampler, runner)
        layout = kv_layout(m, tp, kvb, bs, _stage_kinds(m, first, n_layers), max_len, batched)
        first += n_layers
        if fixed_pool:
            avail = int(kv_cache_memory_bytes)  # type: ignore[arg-type]
            if weights + avail > g.memory_bytes:
                reasons.append(
                    f"stage {s}: weights {weights / GIB:.1f} GiB + KV pool {avail / GIB:.1f} GiB exceed the "
                    f"device's {g.memory_gib:.1f} GiB"
                )
            act_taken = 0
        else:
            act_taken = peak.peak_bytes if g.kind == "gpu" else 0
            avail = int(requested - weights - act_taken - non_torch - graphs_taken)
        blocks = max(0, avail // (layout.page_bytes_per_layer * layout.group_size)) if n_layers else 0
        stages.append(StageMemory(s, n_layers, int(weights), int(act_taken), int(avail), int(blocks)))
        layouts.append(layout)
        peaks.append(peak)
    return _finish(m, g, rules, dp, tp, pp, stages, layouts, peaks, locals())


def model_runner_of(model: ModelSpec, scheme: WeightScheme, rules: VllmRules) -> str:
    """Returns "v2" when vLLM ``rules.version`` runs this model on Model Runner V2 by default, else "v1"."""
    if rules.engine != "v1":
        return "v1"
    quantized = scheme.method != "none"
    return "v2" if uses_model_runner_v2(rules.version, model.architecture, model.is_moe, quantized) else "v1"


def _layout_reasons(m: ModelSpec, g: GpuSpec, tp: int, pp: int, max_len: int) -> list[str]:
    reasons: list[str] = []
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
    return reasons


def _finish(
    m: ModelSpec,
    g: GpuSpec,
    rules: VllmRules,
    dp: int,
    tp: int,
    pp: int,
    stages: list[StageMemory],
    layouts: list[KvLayout],
    peaks: list[ActivationPeak],
    v: dict[str, object],
) -> MemoryPlan:
    """The binding stage's figures, vLLM's reported tokens and concurrency, and why a layout cannot start."""
    reasons: list[str] = v["reasons"]  # type: ignore[assignment]
    notes: list[str] = v["notes"]  # type: ignore[assignment]
    max_len: int = v["max_len"]  # type: ignore[assignment]
    requested: int = v["requested"]  # type: ignore[assignment]
    fixed_pool: bool = v["fixed_pool"]  # type: ignore[assignment]
    b = min(range(len(stages)), key=lambda i: stages[i].kv_blocks)
    binding, layout = stages[b], layouts[b]
    heaviest = max(stages, key=lambda st: st.weights_bytes)
    scheme: WeightScheme = v["scheme"]  # type: ignore[assignment]
    act: float = v["act"]  # type: ignore[assignment]
    total_weights = int(
        sum(_layer_values(m, 1, scheme, act, 0, m.num_layers))
        + (m.params.embedding + m.params.lm_head + m.params.final_norm) * act
    )
    blocks = binding.kv_blocks
    concurrency = blocks / layout.blocks_per_request if layout.blocks_per_request else 0.0
    if layout.num_groups > 1:
        if rules.hybrid_tokens_from_concurrency:
            tokens, how = int(concurrency * max_len), "concurrency × max_model_len"
        else:
            tokens, how = blocks // layout.num_groups * layout.block_size, "blocks // groups × block_size"
        notes.append(
            f"{layout.num_groups} KV groups (full + sliding window {m.sliding_window}): a request of {max_len:,} "
            f"tokens takes {layout.blocks_per_request} blocks; tokens reported as {how} (vLLM {rules.version})"
        )
        equivalent_blocks = tokens // layout.block_size
    else:
        tokens = blocks * layout.block_size
        equivalent_blocks = blocks
    if heaviest.weights_bytes > requested and not fixed_pool:
        reasons.append(
            f"weights need {heaviest.weights_bytes / GIB:.1f} GiB per device but {g.name} × "
            f"{v['gpu_memory_utilization']:g} gives {requested / GIB:.1f} GiB: add TP/PP or quantize"
        )
    elif binding.available_kv_bytes <= 0:
        reasons.append(
            f"no memory left for the KV cache on stage {binding.stage} (weights {binding.weights_bytes / GIB:.1f} "
            f"GiB + activations {binding.activation_bytes / GIB:.1f} GiB fill the {requested / GIB:.1f} GiB budget)"
        )
    if not reasons and blocks == 0:
        reasons.append(
            f"the KV memory ({binding.available_kv_bytes / GIB:.3f} GiB per device) holds no block of "
            f"{layout.page_bytes_per_layer * layout.group_size:,} bytes: give it more memory"
        )
    if not reasons and concurrency < 1:
        reasons.append(
            f"one request of max_model_len {max_len} does not fit the {tokens:,}-token KV cache "
            f"(vLLM would refuse to start); lower max_model_len to at most {tokens}"
        )
    kvb: float = v["kvb"]  # type: ignore[assignment]
    kv_per_token = m.kv_bytes_per_token(kvb)
    paper = PAPER_KV_BYTES_PER_TOKEN.get(m.name)
    if paper and kvb == 2:
        notes.append(
            f"computed KV per token {kv_per_token:,} bytes vs the paper's ≈{paper:,.0f}: the paper's figure matches "
            f"the first published config with {m.num_kv_heads * 2} KV heads; the current config has {m.num_kv_heads}"
        )
    peak = peaks[b]
    per_layer = kv_bytes_per_token_per_layer_per_device(m, tp, kvb)
    return MemoryPlan(
        model=m.name,
        gpu=g.name,
        dp=dp,
        tp=tp,
        pp=pp,
        block_size=layout.block_size,
        max_model_len=max_len,
        weight_dtype=weight_dtype_name(m, scheme, act, str(v["dtype"])),
        kv_dtype_bytes=kvb,
        weights_bytes_total=total_weights,
        weights_bytes_per_device=heaviest.weights_bytes,
        activation_bytes_per_device=binding.activation_bytes,
        non_torch_bytes_per_device=int(v["non_torch"]),  # type: ignore[call-overload]
        requested_bytes_per_device=requested if not fixed_pool else int(v["kv_cache_memory_bytes"]),  # type: ignore[call-overload]
        kv_bytes_per_token=kv_per_token,
        kv_bytes_per_token_per_device=per_layer * binding.num_layers,
        kv_page_bytes_per_layer=layout.page_bytes_per_layer,
        free_bytes_per_device=binding.available_kv_bytes,
        kv_blocks=equivalent_blocks,
        usable_kv_blocks=max(0, equivalent_blocks - 1),
        kv_capacity_tokens=tokens,
        max_concurrency=concurrency,
        feasible=not reasons,
        reason="; ".join(dict.fromkeys(reasons)),
        stages=tuple(stages),
        notes=tuple(notes),
        vllm_version=rules.version,
        max_num_seqs=int(v["seqs"]),  # type: ignore[call-overload]
        max_num_batched_tokens=int(v["batched"]),  # type: ignore[call-overload]
        cudagraph_bytes_per_device=int(v["graphs"]),  # type: ignore[call-overload]
        cudagraph_subtracted=bool(v["graphs_taken"]),
        sampler_bytes_per_device=peak.sampler_bytes,
        forward_bytes_per_device=peak.forward_bytes,
        kv_groups=layout.num_groups,
        model_runner=str(v["runner"]),
    )


def memory_plan_for(scenario: Scenario) -> MemoryPlan:
    """``memory_plan`` with every argument taken from a scenario (model, device, layout, engine settings)."""
    return memory_plan(
        load_model(scenario.model),
        scenario.device(),
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
