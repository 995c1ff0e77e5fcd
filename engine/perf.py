"""Step latency: the time of one engine step (or one pipeline round) for a given batch, on a device's roofline.

    compute = (2 · active params per device · tokens + attention FLOPs) / (peak FLOPS · compute_efficiency)
    memory  = (weights read + KV read + KV written per device) / (peak HBM bandwidth · mem_efficiency)
    step    = max(compute, memory) + TP all-reduces + per-layer/MoE fixed costs + per-step host overhead

TP: two all-reduces per layer of tokens × hidden × 2 bytes, ring formula α·2(n−1) + 2(n−1)/n · S/B (Megatron-LM).
PP: a "round" moves every micro-batch through every stage once (vLLM v1 keeps PP batches in flight); with the
running set split over min(pp, sequences) micro-batches, a round takes pp · stage time(micro-batch) + hand-offs, so
weights are streamed once per micro-batch — the GPipe bubble (p−1)/(m+p−1) appears when micro-batches are few.
MoE: expert weights are read only for experts some token routes to (1 − (1 − k/E)^tokens of them), expert compute is
scaled by a load-imbalance factor, and every MoE layer pays a routing latency.

All functions accept numpy arrays for the batch quantities, so the simulator can price many steps in one call.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from engine.catalog import GpuSpec, ModelSpec, load_gpu, load_model
from engine.memory import (
    kv_bytes_per_token_per_layer_per_device,
    kv_dtype_bytes_of,
    layer_weight_bytes,
    pp_layer_split,
    weight_dtype_of,
)


@dataclass(frozen=True)
class Calibration:
    """Efficiency and overhead parameters of the step model; ``None`` takes the device's default from gpus.toml.

    Issue #6 fits these from measured runs; ``source`` says where a set of values came from.
    """

    mem_efficiency: float | None = None  # achieved fraction of peak HBM bandwidth in decode
    compute_efficiency: float | None = None  # achieved fraction of peak FLOPS in prefill GEMMs
    link_efficiency: float | None = None  # achieved fraction of link bandwidth in all-reduce
    link_latency_s: float | None = None  # α per ring hop
    step_overhead_s: float | None = None  # fixed host cost per scheduled batch
    per_seq_overhead_s: float = 2e-6  # host cost per sequence in a batch (input prep, sampling)
    layer_overhead_s: float = 4e-6  # kernel launch/synchronisation gaps per layer per batch
    per_seq_layer_overhead_s: float = 0.0  # per sequence per layer (CPU backends: per-sequence attention and glue)
    moe_layer_overhead_s: float = 15e-6  # routing (top-k, permute, combine) per MoE layer per batch
    moe_imbalance: float = 1.25  # slowest expert's load over the mean, scales expert compute
    pp_handoff_latency_s: float = 20e-6  # per stage boundary per micro-batch
    # CPU hosts only: ranks of one engine (DP replicas, TP/PP workers) share the host's cores and memory bus, so each
    # step of a rank takes (1 + host_contention · (ranks on the host − 1)) times as long; 0 = no sharing cost.
    host_contention: float = 0.0
    # Served runs only (engine.served): the OpenAI API server's serial work per request and per output token. No
    # public source states it for a GPU host, so it is 0 until a fit on bench records estimates it per device.
    api_request_s: float = 0.0
    api_token_s: float = 0.0
    api_step_s: float = 0.0  # one output message per engine step (engine.arrivals.FrontendCost.step_s)
    source: str = "defaults"

    @classmethod
    def from_object(cls, obj: object | None) -> Calibration:
        """Accept a Calibration, a dict, or any object with matching attributes (e.g. a fitted profile)."""
        if obj is None:
            return cls()
        if isinstance(obj, Calibration):
            return obj
        names = {f.name for f in fields(cls)}
        if isinstance(obj, dict):
            values = {k: v for k, v in obj.items() if k in names}
        else:
            values = {n: getattr(obj, n) for n in names if hasattr(obj, n)}
        return replace(cls(), **values)


@dataclass(frozen=True)
class StepCost:
    """Time of a batch and its parts (arrays when the inputs are arrays)."""

    time_s: Any
    compute_s: Any
    memory_s: Any
    comm_s: Any
    overhead_s: Any
    flops: Any  # per device
    bytes_moved: Any  # per device


class StepModel:
    """Prices batches for one (model, device, layout, dtype) with one calibration. Build once, call often."""

    def __init__(
        self,
        model: ModelSpec | str,
        gpu: GpuSpec | str,
        tp: int = 1,
        pp: int = 1,
        dtype: str = "bfloat16",
        quantization: str = "none",
        kv_cache_dtype: str = "auto",
        calibration: object | None = None,
        max_num_batched_tokens: int = 8192,
    ) -> None:
        m = load_model(model)
        g = load_gpu(gpu)
        cal = Calibration.from_object(calibration)
        self.model, self.gpu, self.tp, self.pp, self.calibration = m, g, tp, pp, cal
        self.max_num_batched_tokens = max_num_batched_tokens
        self.mem_eff = cal.mem_efficiency or g.mem_efficiency
        self.compute_eff = cal.compute_efficiency or g.compute_efficiency
        self.link_eff = cal.link_efficiency or g.link_efficiency
        self.alpha_s = g.link_latency_s if cal.link_latency_s is None else cal.link_latency_s
        self.step_overhead_s = g.step_overhead_s if cal.step_overhead_s is None else cal.step_overhead_s
        wname, qbytes, abytes = weight_dtype_of(m, dtype, quantization)
        self.act_bytes = abytes
        kvb = kv_dtype_bytes_of(kv_cache_dtype, abytes)
        self.peak_flops = g.fp8_flops if (wname == "fp8" and g.fp8_flops) else g.bf16_flops
        self.bw = g.hbm_bytes_per_s * self.mem_eff
        self.flops_rate = self.peak_flops * self.compute_eff
        # The binding stage is the one with most layers (PP splits are near-equal).
        split = pp_layer_split(m.num_layers, min(pp, m.num_layers))
        self.layers = max(split)
        first_moe = m.num_dense_layers
        moe_share = m.num_moe_layers / m.num_layers if m.num_layers else 0.0
        self.moe_layers = self.layers * moe_share
        self.dense_layers = self.layers - self.moe_layers
        dense_layer = layer_weight_bytes(m, tp, qbytes, abytes, moe=False)
        moe_layer = layer_weight_bytes(m, tp, qbytes, abytes, moe=True) if m.is_moe else 0.0
        routed_layer = m.params.moe_routed_per_layer * qbytes / tp if m.is_moe else 0.0
        # Weight bytes always read (everything but routed experts) and routed-expert bytes (read when touched).
        self.fixed_weight_bytes = (
            self.dense_layers * dense_layer
            + self.moe_layers * (moe_layer - routed_layer)
            + max(m.params.embedding, m.params.lm_head) * abytes / tp
        )
        self.routed_weight_bytes = self.moe_layers * routed_layer
        self.expert_touch_p = (m.experts_per_token / m.num_experts) if m.is_moe else 0.0
        self.first_moe_layer = first_moe
        # Matmul FLOPs per token per device (2 per weight), split into always-on and routed-expert parts.
        linear_active = m.active_params - m.params.embedding
        active_routed = m.num_moe_layers * m.params.moe_active_routed_per_layer
        self.flops_per_token_dense = 2.0 * (linear_active - active_routed) / tp / pp
        self.flops_per_token_routed = 2.0 * active_routed / tp / pp * cal.moe_imbalance
        # Attention FLOPs per (query token, cached token) pair per device: QK^T and AV.
        if m.is_mla:  # vLLM's absorbed MLA decode works in the 576-wide latent space
            per_pair = 2 * (m.num_heads / tp) * ((m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank)
        else:
            per_pair = 4 * (m.num_heads / tp) * m.head_dim
        self.attn_flops_per_pair = per_pair * self.layers
        self.kv_bytes_per_token_dev = kv_bytes_per_token_per_layer_per_device(m, tp, kvb) * self.layers
        self.allreduce_bytes_per_token = m.hidden_size * abytes  # one all-reduce payload per token
        self.link_bw = g.link_bytes_per_s * self.link_eff
        ranks = max(int(getattr(g, "ranks_sharing", 1) or 1), 1)
        self.host_slowdown = 1.0 + cal.host_contention * (ranks - 1) if g.kind == "cpu" else 1.0

    # ------------------------------------------------------------------------------------------------------------

    def allreduce_s(self, payload_bytes: Any, n: int | None = None) -> Any:
        """Ring all-reduce of ``payload_bytes`` over ``n`` ranks: α·2(n−1) + 2(n−1)/n · S / B."""
        n = self.tp if n is None else n
        if n <= 1:
            return 0.0
        return self.alpha_s * 2 * (n - 1) + 2 * (n - 1) / n * np.asarray(payload_bytes, dtype=float) / self.link_bw

    def stage_cost(self, tokens: Any, attn_pairs: Any, kv_tokens_read: Any, seqs: Any) -> StepCost:
        """One micro-batch through one stage (for pp=1: one whole step). Quantities are per micro-batch."""
        tokens = np.asarray(tokens, dtype=float)
        m = self.model
        touched = 1.0 - np.power(1.0 - self.expert_touch_p, np.maximum(tokens, 0.0)) if m.is_moe else 0.0
        weight_bytes = self.fixed_weight_bytes + self.routed_weight_bytes * touched
        kv_bytes = (np.asarray(kv_tokens_read, dtype=float) + tokens) * self.kv_bytes_per_token_dev
        bytes_moved = weight_bytes + kv_bytes
        flops = tokens * (self.flops_per_token_dense + self.flops_per_token_routed) + self.attn_flops_per_pair * (
            np.asarray(attn_pairs, dtype=float)
        )
        compute_s = flops / self.flops_rate
        memory_s = bytes_moved / self.bw
        comm_s = 2 * self.layers * self.allreduce_s(tokens * self.allreduce_bytes_per_token)
        cal = self.calibration
        overhead_s = (
            self.layers * cal.layer_overhead_s
            + self.moe_layers * cal.moe_layer_overhead_s
            + (cal.per_seq_overhead_s + self.layers * cal.per_seq_layer_overhead_s) * np.asarray(seqs, dtype=float)
            + self.step_overhead_s
        )
        time_s = (np.maximum(compute_s, memory_s) + comm_s + overhead_s) * self.host_slowdown
        return StepCost(time_s, compute_s, memory_s, comm_s, overhead_s, flops, bytes_moved)

    def round_cost(self, tokens: Any, attn_pairs: Any, kv_tokens_read: Any, seqs: Any) -> StepCost:
        """A scheduler step (pp=1) or a pipeline round (pp>1) in which every sequence of the batch advances once.

        vLLM v1 fills a micro-batch with every schedulable request up to max_num_batched_tokens and cannot schedule a
        request again while it is in flight, so a round holds ceil(tokens / max_num_batched_tokens) micro-batches
        (at most pp, at most one per sequence). Each passes every stage in turn: the round takes
        pp · stage time(micro-batch) plus pp hand-offs — with one micro-batch, the GPipe bubble (p−1)/p.
        """
        if self.pp == 1:
            return self.stage_cost(tokens, attn_pairs, kv_tokens_read, seqs)
        seqs_a = np.asarray(seqs, dtype=float)
        tokens_a = np.asarray(tokens, dtype=float)
        n_mb = np.clip(np.ceil(tokens_a / self.max_num_batched_tokens), 1, np.clip(seqs_a, 1, self.pp))
        per = self.stage_cost(
            np.asarray(tokens, dtype=float) / n_mb,
            np.asarray(attn_pairs, dtype=float) / n_mb,
            np.asarray(kv_tokens_read, dtype=float) / n_mb,
            seqs_a / n_mb,
        )
        handoff = self.calibration.pp_handoff_latency_s + (
            np.asarray(tokens, dtype=float) / n_mb * self.allreduce_bytes_per_token / self.link_bw
        )
        p = self.pp
        return StepCost(
            per.time_s * p + handoff * p,
            per.compute_s * p,
            per.memory_s * p,
            per.comm_s * p + handoff * p,
            per.overhead_s * p,
            per.flops * n_mb,
            per.bytes_moved * n_mb,
        )

    def decode_step_s(self, batch: int, context_tokens: int) -> float:
        """Convenience: one decode step of ``batch`` sequences each holding ``context_tokens``."""
        cost = self.round_cost(batch, batch * context_tokens, batch * context_tokens, batch)
        return float(cost.time_s)

    def prefill_s(self, tokens: int) -> float:
        """Convenience: one prefill of ``tokens`` prompt tokens of a single sequence."""
        cost = self.round_cost(tokens, tokens * tokens / 2, 0, 1)
        return float(cost.time_s)
