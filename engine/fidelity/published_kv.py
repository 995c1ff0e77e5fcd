"""Start-up records of ``data/published/startup/`` and how well ``engine.memory`` predicts their KV cache.

A small typed loader of the "cliffscope-published/1" start-up kind (the ``published`` helper owns the full importer);
``score_startup_records`` sizes every record with the flags it states and vLLM's defaults of its version for the
rest, and returns one typed row per record. Sources that state no version are sized with the rules of the last
release before their date (``engine.vllm_rules.version_at``), and the row says so.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from engine.catalog import DATA_DIR, GIB, CatalogError
from engine.memory import MemoryPlan, memory_plan
from engine.vllm_rules import sets_a_constant, version_at

STARTUP_DIR = DATA_DIR / "published" / "startup"
FORMAT = "cliffscope-published/1"
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


def _need(table: dict[str, object], key: str, where: str) -> object:
    if key not in table:
        raise CatalogError(f"{where}: missing field {key!r}")
    return table[key]


def load_startup_record(path: Path) -> StartupRecord:
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    where = str(path)
    if raw.get("format") != FORMAT:
        raise CatalogError(f"{where}: format must be {FORMAT!r}")
    if raw.get("kind") != "startup" or raw.get("id") != path.stem:
        raise CatalogError(f"{where}: kind must be 'startup' and id must equal the file name")
    src, hw, sw, model = (raw.get(k) or {} for k in ("source", "hardware", "software", "model"))
    if not src.get("url") or not src.get("quote"):
        raise CatalogError(f"{where}: [source] needs url and quote lines")
    figures = {k: float(v) for k, v in (raw.get("figures") or {}).items()}
    if not {"kv_cache_tokens", "available_kv_cache_gib", "num_gpu_blocks"} & set(figures):
        raise CatalogError(f"{where}: [figures] states no KV figure (kv_cache_tokens, available_kv_cache_gib)")
    return StartupRecord(
        id=str(raw["id"]),
        title=str(raw.get("title", "")),
        url=str(src["url"]),
        date=str(src.get("date", "")),
        gpu=str(_need(hw, "gpu", where)),
        num_gpus=int(_need(hw, "num_gpus", where)),  # type: ignore[call-overload]
        vllm_version=str(sw.get("vllm_version", "unstated")),
        model=str(_need(model, "name", where)),
        server=dict(raw.get("server") or {}),
        figures=figures,
        quotes=tuple(str(q) for q in src["quote"]),
        explained_miss=str(raw.get("explained_miss", "")),
    )


def load_startup_records(directory: Path = STARTUP_DIR) -> list[StartupRecord]:
    return [load_startup_record(p) for p in sorted(directory.glob("*.toml"))]


def rules_version(rec: StartupRecord) -> tuple[str, bool]:
    if rec.vllm_version != "unstated":
        return rec.vllm_version, False
    if not rec.date:
        raise CatalogError(f"{rec.id}: states neither vllm_version nor a source date")
    return version_at(dt.date.fromisoformat(rec.date)), True


def predict_record(rec: StartupRecord) -> tuple[MemoryPlan, str, bool]:
    """The plan for a record's stated flags; what it does not state takes vLLM's default of that version."""
    version, assumed = rules_version(rec)
    s = rec.server
    plan = memory_plan(
        rec.model,
        rec.gpu,
        tp=int(s.get("tensor_parallel_size", 1)),  # type: ignore[call-overload]
        pp=int(s.get("pipeline_parallel_size", 1)),  # type: ignore[call-overload]
        gpu_memory_utilization=float(s.get("gpu_memory_utilization", 0.9)),  # type: ignore[arg-type]
        block_size=s.get("block_size"),  # type: ignore[arg-type]
        max_model_len=s.get("max_model_len"),  # type: ignore[arg-type]
        max_num_batched_tokens=s.get("max_num_batched_tokens"),  # type: ignore[arg-type]
        max_num_seqs=s.get("max_num_seqs"),  # type: ignore[arg-type]
        dtype=str(s.get("dtype", "auto")),
        quantization=str(s.get("quantization", "none")),
        kv_cache_dtype=str(s.get("kv_cache_dtype", "auto")),
        vllm_version=version,
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
    """``total × gpu_memory_utilization``: what vLLM's profile splits (None when the source states no total)."""
    total = rec.figures.get("total_gpu_memory_gib")
    return None if total is None else total * float(rec.server.get("gpu_memory_utilization", 0.9))  # type: ignore[arg-type]


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
