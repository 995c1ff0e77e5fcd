"""Step latency: the time of one engine step (or one pipeline round) for a given batch, on a device's roofline.

    compute = (2 · active params per device · tokens + attention FLOPs) / (peak FLOPS · compute_efficiency)
    memory  = (weights read + KV read + KV written per device) / (peak HBM bandwidth · mem_efficiency)
    step    = max(compute, memory) + TP all-reduces + per-layer/MoE fixed costs + per-step host overhead
    async   : step = max(device part, host part) (vLLM's async scheduling, below)

TP: two all-reduces per layer of tokens × hidden × 2 bytes, ring formula α·2(n−1) + 2(n−1)/n · S/B (Megatron-LM).
PP: a "round" moves every micro-batch through every stage once (vLLM v1 keeps PP batches in flight); with the
running set split over min(pp, sequences) micro-batches, a round takes pp · stage time(micro-batch) + hand-offs, so
weights are streamed once per micro-batch — the GPipe bubble (p−1)/(m+p−1) appears when micro-batches are few.
MoE: expert weights are read only for the experts some token routes to — E·(1 − (1 − k/E)^B) distinct experts of
E for B tokens with top-k routing (``expected_distinct_experts``), each read once per step —, expert compute is
scaled by a load-imbalance factor, every MoE layer pays a routing latency, and the dispatch/combine moves each
token's hidden state to its k experts and back through HBM (``moe_dispatch_bytes_per_token``: vLLM's fused MoE
gathers, writes each expert's output and sums them).
MLA: decode runs the absorbed form in the 576-wide latent space; prefill (pairs among a chunk's new tokens) runs the
up-projected form (q·k over 192 dims, v 128), 3.4× fewer FLOPs per pair (``attention_flops``).

Async scheduling (vLLM's ``AsyncScheduler``, PR #19970; on by default for one-stage GPU engines from 0.14, see
``engine.vllm_rules.async_scheduling_default``): the engine core schedules step n+1 and prepares its inputs while the
device runs step n, so the host's part of a step (``step_overhead_s``, ``per_seq_overhead_s``) overlaps the device's
instead of adding to it. A CPU host has no such overlap (its cores run both), and a PP round already overlaps the host
through the batch queue (``round_cost``), so the flag changes one-stage GPU steps only.

All functions accept numpy arrays for the batch quantities, so the simulator can price many steps in one call.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from engine.catalog import GpuSpec, ModelSpec, load_gpu, load_model, mxfp4_kernel_of
from engine.memory import (
    activation_dtype_bytes,
    effective_scheme,
    kv_bytes_per_token_per_layer_per_device,
    kv_dtype_bytes_of,
    layer_bytes,
    pp_layer_split,
    routed_expert_bytes,
)


def expected_distinct_experts(tokens: Any, experts_per_token: int, num_experts: int) -> Any:
    """Expected number of distinct experts hit by ``tokens`` tokens each routed to ``experts_per_token`` of
    ``num_experts``: E·(1 − (1 − k/E)^B).

    A token picks k distinct experts, so a given expert escapes it with probability 1 − k/E; with routing taken as
    uniform and independent across tokens, it escapes all B with (1 − k/E)^B. Each hit expert's weights are read
    once per step (vLLM's fused MoE loops over experts with their tokens), so this, not B·k, sets the bytes.
    Measured shape (dstack's DeepSeek-R1 on 8×H200, TPOT at concurrency 4–128: 25.7, 31.3, 49.6, 51.7, 65.6,
    71.9 ms) follows 31, 57, 102, 163, 222 and 252 of 256 experts hit.
    """
    if num_experts <= 0:
        return np.zeros_like(np.asarray(tokens, dtype=float))
    b = np.maximum(np.asarray(tokens, dtype=float), 0.0)
    return num_experts * (1.0 - np.power(1.0 - experts_per_token / num_experts, b))


def ring_allreduce_s(payload_bytes: Any, n: int, latency_s: float, bus_bytes_per_s: float) -> Any:
    """Ring all-reduce of ``payload_bytes`` over ``n`` ranks (Megatron-LM's / NCCL's ring): 2(n − 1) steps, each
    paying the per-hop latency α and moving S/n bytes, so α·2(n−1) + 2(n−1)/n · S / B (B: one direction of a
    rank's link, achieved). 0 for one rank."""
    if n <= 1:
        return np.zeros_like(np.asarray(payload_bytes, dtype=float))
    return latency_s * 2 * (n - 1) + 2 * (n - 1) / n * np.asarray(payload_bytes, dtype=float) / bus_bytes_per_s


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
        async_scheduling: bool = False,
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
        # A layer's bytes as the memory plan loads them (the scheme's bytes per tensor kind: MXFP4 experts at 17/32
        # of a byte beside 16-bit attention, scales included, padding for the MoE kernel of this device).
        scheme = effective_scheme(m, quantization, mxfp4_kernel_of(g))
        abytes = activation_dtype_bytes(m, dtype)
        self.act_bytes = abytes
        kvb = kv_dtype_bytes_of(kv_cache_dtype, abytes)
        self.peak_flops = g.fp8_flops if (scheme.method == "fp8" and g.fp8_flops) else g.bf16_flops
        self.bw = g.hbm_bytes_per_s * self.mem_eff
        self.flops_rate = self.peak_flops * self.compute_eff
        # The binding stage is the one with most layers (PP splits are near-equal).
        split = pp_layer_split(m.num_layers, min(pp, m.num_layers))
        self.layers = max(split)
        first_moe = m.num_dense_layers
        moe_share = m.num_moe_layers / m.num_layers if m.num_layers else 0.0
        self.moe_layers = self.layers * moe_share
        self.dense_layers = self.layers - self.moe_layers
        dense_layer = layer_bytes(m, tp, scheme, abytes, moe=False)
        moe_layer = layer_bytes(m, tp, scheme, abytes, moe=True) if m.is_moe else 0.0
        routed_layer = routed_expert_bytes(m, tp, scheme, abytes) if m.is_moe else 0.0
        # Weight bytes always read (everything but routed experts) and routed-expert bytes (read when touched).
        self.fixed_weight_bytes = (
            self.dense_layers * dense_layer
            + self.moe_layers * (moe_layer - routed_layer)
            + max(m.params.embedding, m.params.lm_head) * abytes / tp
        )
        self.routed_weight_bytes = self.moe_layers * routed_layer
        self.expert_touch_p = (m.experts_per_token / m.num_experts) if m.is_moe else 0.0
        # Dispatch/combine traffic per token per device (activations are replicated over TP ranks, each rank works
        # on every token with its shard of each expert): gather the token for each of its k experts, write and read
        # back each expert's output (k·h each), write/read the gate-up and activation caches (2·I/tp + I/tp, written
        # and read), write the combined output (h). Priced at the HBM bandwidth like any other byte.
        k, h = m.experts_per_token, m.hidden_size
        inter = m.moe_intermediate_size / tp if m.is_moe else 0.0
        self.moe_dispatch_bytes_per_token = (
            self.moe_layers * abytes * (3 * k * h + 6 * k * inter + h) if m.is_moe else 0.0
        )
        self.first_moe_layer = first_moe
        # Matmul FLOPs per token per device (2 per weight), split into always-on and routed-expert parts.
        linear_active = m.active_params - m.params.embedding
        active_routed = m.num_moe_layers * m.params.moe_active_routed_per_layer
        self.flops_per_token_dense = 2.0 * (linear_active - active_routed) / tp / pp
        self.flops_per_token_routed = 2.0 * active_routed / tp / pp * cal.moe_imbalance
        # Attention FLOPs per (query token, cached token) pair per device: QK^T and AV.
        if m.is_mla:  # vLLM's absorbed MLA decode works in the 576-wide latent space
            per_pair = 2 * (m.num_heads / tp) * ((m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank)
            # Prefill: the up-projected form (MLACommonImpl's prefill path): q·k over nope+rope dims, then v.
            prefill_pair = 2 * (m.num_heads / tp) * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim)
        else:
            per_pair = 4 * (m.num_heads / tp) * m.head_dim
            prefill_pair = per_pair
        self.attn_flops_per_pair = per_pair * self.layers
        self.prefill_attn_flops_per_pair = prefill_pair * self.layers
        self.kv_bytes_per_token_dev = kv_bytes_per_token_per_layer_per_device(m, tp, kvb) * self.layers
        # Sliding-window layers (gpt-oss: every other layer, 128 tokens) attend to the last ``sliding_window`` tokens
        # only: their KV reads and attention pairs stop growing with the context (``sliding_context``).
        kinds = m.layer_attention
        self.sliding_share = sum(k == "sliding" for k in kinds) / len(kinds) if kinds else 0.0
        self.sliding_window = m.sliding_window if self.sliding_share else 0
        self.allreduce_bytes_per_token = m.hidden_size * abytes  # one all-reduce payload per token
        self.link_bw = g.link_bytes_per_s * self.link_eff
        ranks = max(int(getattr(g, "ranks_sharing", 1) or 1), 1)
        self.host_slowdown = 1.0 + cal.host_contention * (ranks - 1) if g.kind == "cpu" else 1.0
        self.host_overlaps_device = async_scheduling and pp == 1 and g.kind == "gpu"

    # ------------------------------------------------------------------------------------------------------------

    def allreduce_s(self, payload_bytes: Any, n: int | None = None) -> Any:
        """Ring all-reduce of ``payload_bytes`` over ``n`` ranks: α·2(n−1) + 2(n−1)/n · S / B."""
        n = self.tp if n is None else n
        if n <= 1:
            return 0.0
        return ring_allreduce_s(payload_bytes, n, self.alpha_s, self.link_bw)

    def attention_flops(self, attn_pairs: Any, kv_tokens_read: Any, seqs: Any) -> Any:
        """Attention FLOPs per device. Pairs beyond one per cached token read and one per sequence are a prefill
        chunk's pairs among its new tokens (and its re-read context), priced at the prefill form; the rest at the
        decode form. The two forms differ only for MLA (absorbed decode vs up-projected prefill)."""
        pairs = np.asarray(attn_pairs, dtype=float)
        if self.prefill_attn_flops_per_pair == self.attn_flops_per_pair:
            return self.attn_flops_per_pair * pairs
        excess = np.clip(pairs - np.asarray(kv_tokens_read, dtype=float) - np.asarray(seqs, dtype=float), 0.0, None)
        excess = np.minimum(excess, pairs)
        return self.attn_flops_per_pair * (pairs - excess) + self.prefill_attn_flops_per_pair * excess

    def experts_touched_share(self, tokens: Any) -> Any:
        """Share of the routed experts a micro-batch of ``tokens`` reads (expected_distinct_experts / E)."""
        m = self.model
        if not m.is_moe:
            return 0.0
        return expected_distinct_experts(tokens, m.experts_per_token, m.num_experts) / m.num_experts

    def sliding_context(self, tokens: Any, attn_pairs: Any, kv_tokens_read: Any, seqs: Any) -> tuple[Any, Any]:
        """Attention pairs and cached tokens read, averaged over the layers, when some layers attend to a sliding
        window of W tokens (vLLM's sliding-window attention reads no KV outside it): such a layer reads at most W
        cached tokens a sequence and pairs each query with at most W keys. The batch gives only sums, so a layer's
        reads are taken as min(Σ context, W · sequences), exact once every context reaches W (a decoding gpt-oss
        request's prompt alone does, at W = 128)."""
        pairs = np.asarray(attn_pairs, dtype=float)
        read = np.asarray(kv_tokens_read, dtype=float)
        if not self.sliding_share:
            return pairs, read
        w, share = self.sliding_window, self.sliding_share
        window_pairs = np.minimum(pairs, w * np.asarray(tokens, dtype=float))
        window_read = np.minimum(read, w * np.asarray(seqs, dtype=float))
        return pairs + share * (window_pairs - pairs), read + share * (window_read - read)

    def stage_cost(self, tokens: Any, attn_pairs: Any, kv_tokens_read: Any, seqs: Any) -> StepCost:
        """One micro-batch through one stage (for pp=1: one whole step). Quantities are per micro-batch."""
        tokens = np.asarray(tokens, dtype=float)
        attn_pairs, kv_tokens_read = self.sliding_context(tokens, attn_pairs, kv_tokens_read, seqs)
        touched = self.experts_touched_share(tokens)
        weight_bytes = self.fixed_weight_bytes + self.routed_weight_bytes * touched
        kv_bytes = (np.asarray(kv_tokens_read, dtype=float) + tokens) * self.kv_bytes_per_token_dev
        bytes_moved = weight_bytes + kv_bytes + tokens * self.moe_dispatch_bytes_per_token
        flops = tokens * (self.flops_per_token_dense + self.flops_per_token_routed) + self.attention_flops(
            attn_pairs, kv_tokens_read, seqs
        )
        compute_s = flops / self.flops_rate
        memory_s = bytes_moved / self.bw
        comm_s = 2 * self.layers * self.allreduce_s(tokens * self.allreduce_bytes_per_token)
        cal = self.calibration
        seqs_a = np.asarray(seqs, dtype=float)
        overhead_s = (
            self.layers * cal.layer_overhead_s
            + self.moe_layers * cal.moe_layer_overhead_s
            + (cal.per_seq_overhead_s + self.layers * cal.per_seq_layer_overhead_s) * seqs_a
            + self.step_overhead_s
        )
        if self.host_overlaps_device:
            host_s = self.host_step_s(seqs_a)
            device_s = np.maximum(compute_s, memory_s) + comm_s + (overhead_s - host_s)
            time_s = np.maximum(device_s, host_s)
            overhead_s = time_s - np.maximum(compute_s, memory_s) - comm_s
        else:
            time_s = (np.maximum(compute_s, memory_s) + comm_s + overhead_s) * self.host_slowdown
        return StepCost(time_s, compute_s, memory_s, comm_s, overhead_s, flops, bytes_moved)

    def host_step_s(self, seqs: Any, micro_batches: Any = 1) -> Any:
        """The host's part of one scheduled batch (scheduling, input preparation, sampling) when ``seqs`` sequences
        are split over ``micro_batches``: what async scheduling and a PP round's batch queue overlap with the
        device's part."""
        return self.step_overhead_s + self.calibration.per_seq_overhead_s * seqs / micro_batches

    def round_cost(self, tokens: Any, attn_pairs: Any, kv_tokens_read: Any, seqs: Any) -> StepCost:
        """A scheduler step (pp=1) or a pipeline round (pp>1) in which every sequence of the batch advances once.

        vLLM v1 fills a micro-batch with every schedulable request up to max_num_batched_tokens and cannot schedule a
        request again while it is in flight, so a round holds m = ceil(tokens / max_num_batched_tokens) micro-batches
        (at most pp, at most one per sequence). Each passes every stage in turn, so the devices' part of a round takes
        pp · stage time(micro-batch) plus pp hand-offs — with one micro-batch, the GPipe bubble (p−1)/p.
        The host's part of a step (scheduling, input preparation, sampling: ``step_overhead_s`` and
        ``per_seq_overhead_s``) runs once per micro-batch on the engine core, not once per stage, and overlaps the
        stages (vLLM's batch queue schedules micro-batch j+1 while j runs): the round's critical path is the longer
        of the device pipeline after the first host step, p·g + h, and the host's m steps before the last
        micro-batch's stage, m·h + g (g: a stage's device time, h: one host step).
        """
        if self.pp == 1:
            return self.stage_cost(tokens, attn_pairs, kv_tokens_read, seqs)
        seqs_a = np.asarray(seqs, dtype=float)
        tokens_a = np.asarray(tokens, dtype=float)
        n_mb = np.clip(np.ceil(tokens_a / self.max_num_batched_tokens), 1, np.clip(seqs_a, 1, self.pp))
        per = self.stage_cost(
            tokens_a / n_mb,
            np.asarray(attn_pairs, dtype=float) / n_mb,
            np.asarray(kv_tokens_read, dtype=float) / n_mb,
            seqs_a / n_mb,
        )
        handoff = self.calibration.pp_handoff_latency_s + (
            tokens_a / n_mb * self.allreduce_bytes_per_token / self.link_bw
        )
        p = self.pp
        host = self.host_step_s(seqs_a, n_mb) * self.host_slowdown
        device = per.time_s - host
        time_s = np.maximum(p * device + host, n_mb * host + device) + handoff * p
        return StepCost(
            time_s,
            per.compute_s * p,
            per.memory_s * p,
            per.comm_s * p + handoff * p,
            (per.overhead_s * self.host_slowdown - host) * p + (time_s - p * device - handoff * p),
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
