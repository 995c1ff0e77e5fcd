"""Start-up records of ``data/published/startup/`` and how well ``engine.memory`` predicts their KV cache.

Start-up records are read by the format's one parser (``engine.formats.published``);
``score_startup_records`` sizes every record with the flags it states and vLLM's defaults of its version for the
rest, and returns one typed row per record. Sources that state no version are sized with the rules of the last
release before their date (``engine.vllm_rules.version_at``), and the row says so.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from engine.catalog import DATA_DIR, GIB, CatalogError, load_gpu
from engine.formats.model import ValidationError
from engine.formats.published import RecordKind, parse_record
from engine.memory import MemoryPlan, memory_plan
from engine.vllm_rules import sets_a_constant, version_at, vllm_rules

STARTUP_DIR = DATA_DIR / "published" / "startup"
WITHIN = 0.05  # the bar: within 5 % of vLLM's own figure


@dataclass(frozen=True)
class StartupRecord:
    id: str
    title: str
    url: str
    date: str
    gpu: str
    num_gpus: int
    vllm_version: str
    model: str
    server: dict[str, object] = field(repr=False)
    figures: dict[str, float] = field(repr=False)
    quotes: tuple[str, ...] = field(repr=False, default=())
    explained_miss: str = ""  # the gatherer's one-line reason, from the source, when the engine cannot match it


@dataclass(frozen=True)
class KvScoreRow:
    """One record: the figure compared (tokens when stated, else GiB available), published vs predicted."""

    id: str
    figure: str
    published: float
    predicted: float
    error: float  # (predicted − published) / published
    vllm_version: str  # the rules used
    version_assumed: bool
    plan: MemoryPlan = field(repr=False)
    note: str = ""
    explanation: str = ""  # why a miss misses: computed from the record's own figures, else its explained_miss

    @property
    def within(self) -> bool:
        return abs(self.error) <= WITHIN

    @property
    def explained(self) -> bool:
        return self.within or bool(self.explanation)


@dataclass(frozen=True)
class KvScoreSummary:
    rows: tuple[KvScoreRow, ...]
    median_abs_error: float
    mean_abs_error: float
    worst: KvScoreRow
    share_within: float
    held_out: KvScoreSummary | None = None  # the same over records that set no constant (``vllm_rules``)

    @property
    def unexplained_misses(self) -> tuple[KvScoreRow, ...]:
        return tuple(r for r in self.rows if not r.explained)


def load_startup_record(path: Path) -> StartupRecord:
    """A start-up record, read and validated by the one parser of the format (``engine.formats.published``)."""
    try:
        rec = parse_record(path.read_bytes(), str(path))
    except ValidationError as exc:
        raise CatalogError(str(exc)) from None
    if rec.kind is not RecordKind.STARTUP:
        raise CatalogError(f"{path}: kind must be 'startup', not {rec.kind.value!r}")
    figures = dict(rec.figures)
    if not {"kv_cache_tokens", "available_kv_cache_gib", "num_gpu_blocks"} & set(figures):
        raise CatalogError(f"{path}: [figures] states no KV figure (kv_cache_tokens, available_kv_cache_gib)")
    return StartupRecord(
        id=rec.id,
        title=rec.title,
        url=rec.source.reference,
        date=rec.source.date or "",
        gpu=rec.gpu,
        num_gpus=rec.num_gpus,
        vllm_version=rec.vllm_version,
        model=rec.model_name,
        server=rec.server.as_dict(),
        figures=figures,
        quotes=rec.source.quote,
        explained_miss=rec.explained_miss or "",
    )


def load_startup_records(directory: Path = STARTUP_DIR) -> list[StartupRecord]:
    return [load_startup_record(p) for p in sorted(directory.glob("*.toml"))]


def rules_version(rec: StartupRecord) -> tuple[str, bool]:
    if rec.vllm_version != "unstated":
        return rec.vllm_version, False
    if not rec.date:
        raise CatalogError(f"{rec.id}: states neither vllm_version nor a source date")
    return version_at(dt.date.fromisoformat(rec.date)), True


FLASHINFER_SAMPLER_LINE = "Using FlashInfer for top-p & top-k sampling"
NO_CUSTOM_ALL_REDUCE_LINE = "Custom allreduce is disabled"
MXFP4_MARLIN_LINE = "leveraging the Marlin kernel"
# vLLM's custom_all_reduce.py names the cause when it is the missing peer access (its warning wraps after "GPU"
# in some logs, so the test stops there)
NO_PEER_TO_PEER_LINE = "Custom allreduce is disabled because your platform lacks GPU"


def quotes_say(quotes: tuple[str, ...], line: str) -> bool:
    """Whether one of a record's quoted log lines carries ``line``, vLLM's own words for a runtime fact."""
    return any(line in q for q in quotes)


def lacks_peer_to_peer(quotes: tuple[str, ...]) -> bool:
    """Whether a record's quoted log says its GPUs have no peer access (engine.catalog.without_peer_to_peer)."""
    return quotes_say(quotes, NO_PEER_TO_PEER_LINE)


@dataclass(frozen=True)
class RuntimeFacts:
    """What a start-up log shows of the machine rather than of a flag (each read from vLLM's own words)."""

    sampler: str  # "flashinfer" when vLLM found the package, else "pytorch"
    custom_all_reduce: bool  # off without GPU peer-to-peer, across nodes, or by flag
    mxfp4_kernel: str | None  # "marlin" when the log says vLLM fell back to it; None: the device's kernel


def runtime_facts(rec: StartupRecord) -> RuntimeFacts:
    """The record's runtime facts as its quoted log lines show them: vLLM picks FlashInfer's sampler when the
    package is installed, turns custom all-reduce off without GPU peer-to-peer or across nodes, and falls back to
    the Marlin kernel for MXFP4 experts; its log says so in these words."""
    car_off = bool(rec.server.get("disable_custom_all_reduce")) or quotes_say(rec.quotes, NO_CUSTOM_ALL_REDUCE_LINE)
    return RuntimeFacts(
        sampler="flashinfer" if quotes_say(rec.quotes, FLASHINFER_SAMPLER_LINE) else "pytorch",
        custom_all_reduce=not car_off,
        mxfp4_kernel="marlin" if quotes_say(rec.quotes, MXFP4_MARLIN_LINE) else None,
    )


def stated_or_default_utilization(rec: StartupRecord, version: str) -> float:
    """The record's ``gpu_memory_utilization``, else the default of the vLLM version it ran (0.9, 0.92 from 0.20)."""
    stated = rec.server.get("gpu_memory_utilization")
    return float(stated) if stated is not None else vllm_rules(version).default_gpu_memory_utilization  # type: ignore[arg-type]


def predict_record(rec: StartupRecord) -> tuple[MemoryPlan, str, bool]:
    """The plan for a record's stated flags; what it does not state takes vLLM's default of that version."""
    version, assumed = rules_version(rec)
    facts = runtime_facts(rec)
    s = rec.server
    plan = memory_plan(
        rec.model,
        rec.gpu,
        tp=int(s.get("tensor_parallel_size", 1)),  # type: ignore[call-overload]
        pp=int(s.get("pipeline_parallel_size", 1)),  # type: ignore[call-overload]
        gpu_memory_utilization=stated_or_default_utilization(rec, version),
        block_size=s.get("block_size"),  # type: ignore[arg-type]
        max_model_len=s.get("max_model_len"),  # type: ignore[arg-type]
        max_num_batched_tokens=s.get("max_num_batched_tokens"),  # type: ignore[arg-type]
        max_num_seqs=s.get("max_num_seqs"),  # type: ignore[arg-type]
        dtype=str(s.get("dtype", "auto")),
        quantization=str(s.get("quantization", "none")),
        kv_cache_dtype=str(s.get("kv_cache_dtype", "auto")),
        vllm_version=version,
        sampler=facts.sampler,
        custom_all_reduce=facts.custom_all_reduce,
        mxfp4_kernel=facts.mxfp4_kernel,
    )
    return plan, version, assumed


def score_record(rec: StartupRecord) -> KvScoreRow:
    plan, version, assumed = predict_record(rec)
    f = rec.figures
    if "kv_cache_tokens" in f:
        figure, published, predicted = "kv_cache_tokens", f["kv_cache_tokens"], float(plan.kv_capacity_tokens)
    elif "num_gpu_blocks" in f:
        figure, published, predicted = "num_gpu_blocks", f["num_gpu_blocks"], float(plan.kv_blocks)
    else:
        figure, published = "available_kv_cache_gib", f["available_kv_cache_gib"]
        predicted = plan.free_bytes_per_device / GIB
    error = (predicted - published) / published if published else float("inf")
    note = f"version assumed from the source date: {version}" if assumed else ""
    explanation = "" if abs(error) <= WITHIN else explain_miss(rec, plan)
    return KvScoreRow(rec.id, figure, published, predicted, error, version, assumed, plan, note, explanation)


CLOSE_GIB = 0.05  # four figures each rounded to 0.01 GiB in vLLM's log: a sum off by more is not rounding


def budget_gib(rec: StartupRecord) -> float | None:
    """``total × gpu_memory_utilization``: what vLLM's profile splits. The total is the source's when it quotes one,
    else the catalog's CUDA-reported total of the record's GPU (``data/gpus.toml``)."""
    total = rec.figures.get("total_gpu_memory_gib")
    if total is None:
        total = load_gpu(rec.gpu).memory_bytes / GIB
    return total * stated_or_default_utilization(rec, rules_version(rec)[0])


def closure_residual_gib(rec: StartupRecord, plan: MemoryPlan) -> float | None:
    """What the record's own figures leave unaccounted in vLLM's split of the budget, in GiB.

    ``determine_available_memory`` (V1) and ``determine_num_available_blocks`` (V0) both set available = budget −
    weights − activation peak − non-torch (− CUDA-graph estimate where it is subtracted, from 0.21), so a log's
    figures sum to the budget within rounding; every llm-d row but one closes to 0.01 GiB. A residual beyond
    ``CLOSE_GIB`` means the source misstates one figure, and no model can match all of them.
    """
    f, budget = rec.figures, budget_gib(rec)
    keys = ("model_weights_gib", "activation_peak_gib", "non_torch_gib", "available_kv_cache_gib")
    if budget is None or not all(k in f for k in keys):
        return None
    graphs = f.get("cuda_graph_gib", 0.0) if plan.cudagraph_subtracted else 0.0
    return budget - sum(f[k] for k in keys) - graphs


def component_deltas(rec: StartupRecord, plan: MemoryPlan) -> list[tuple[str, float, float, bool]]:
    """(component, published GiB, predicted GiB, inferred) for each part of the split the source states.

    An activation peak the source does not print is inferred by closing vLLM's split (budget − weights − non-torch −
    available) when the other three are stated, as the V0 "Memory profiling results" line allows.
    """
    f = rec.figures
    pred = {
        "weights": plan.weights_bytes_per_device / GIB,
        "activation": plan.activation_bytes_per_device / GIB,
        "non-torch": plan.non_torch_bytes_per_device / GIB,
    }
    keys = {"weights": "model_weights_gib", "activation": "activation_peak_gib", "non-torch": "non_torch_gib"}
    out = [(name, f[key], pred[name], False) for name, key in keys.items() if key in f]
    budget = budget_gib(rec)
    inferable = ("model_weights_gib", "non_torch_gib", "available_kv_cache_gib")
    if "activation_peak_gib" not in f and budget is not None and all(k in f for k in inferable):
        act = budget - sum(f[k] for k in inferable)
        out.append(("activation", act, pred["activation"], True))
    return out


def explain_miss(rec: StartupRecord, plan: MemoryPlan) -> str:
    """One line on why a record misses, computed from its own figures; the record's ``explained_miss`` otherwise."""
    residual = closure_residual_gib(rec, plan)
    if residual is not None and abs(residual) > CLOSE_GIB:
        line = (
            f"source figures do not close: budget − weights − activation − non-torch − available = {residual:+.2f} GiB "
            "(vLLM's split leaves 0), so the source misstates one of them"
        )
        return f"{line}. {rec.explained_miss}" if rec.explained_miss else line
    deltas = [d for d in component_deltas(rec, plan) if abs(d[2] - d[1]) >= 0.02]
    if deltas:
        deltas.sort(key=lambda d: -abs(d[2] - d[1]))
        parts = [
            f"{name} {pub:.2f} GiB{' (inferred)' if inferred else ''} logged vs {pred:.2f} modelled"
            for name, pub, pred, inferred in deltas
        ]
        line = "; ".join(parts)
        return f"{line}. {rec.explained_miss}".strip() if rec.explained_miss else line
    return rec.explained_miss


def summarize(rows: tuple[KvScoreRow, ...], held_out: KvScoreSummary | None = None) -> KvScoreSummary:
    errs = [abs(r.error) for r in rows]
    worst = max(rows, key=lambda r: abs(r.error))
    within = sum(1 for r in rows if r.within) / len(rows)  # misses count as misses, explained or not
    return KvScoreSummary(rows, statistics.median(errs), statistics.fmean(errs), worst, within, held_out)


def score_startup_records(directory: Path = STARTUP_DIR) -> KvScoreSummary:
    """Every start-up record scored, and separately those that set no constant of ``engine.vllm_rules``.

    Median, mean and worst absolute error and the share within 5 %; the held-out summary is the fidelity figure (the
    issue's rule: scored only on what a fit never saw), the full one shows the calibrating records still agree.
    """
    rows = tuple(score_record(r) for r in load_startup_records(directory))
    if not rows:
        raise CatalogError(f"no start-up records under {directory}")
    held = tuple(r for r in rows if not sets_a_constant(r.id))
    return summarize(rows, summarize(held) if held else None)
