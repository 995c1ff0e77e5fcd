"""The scenario controls (sidebar): one widget per Scenario field, seeded from the link, writing back the scenario.

Every widget is built from ``engine.scenario`` ranges and choices, so a control can show anything a valid link
carries and nothing the engine would refuse. The DP×TP×PP split is one control offering only the valid splits.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import replace
from pathlib import Path

import streamlit as st

from engine.catalog import CatalogError, load_gpu, model_from_config
from engine.scenario import DEFAULT, Scenario, field_range, valid_layouts
from engine.workload import WorkloadError, parse_workload
from pages.ui import data, links


def _ladder(low: int, high: int, current: int, extra: tuple[int, ...] = ()) -> list[int]:
    """Powers of two (and a few round numbers) between low and high, plus the current value: what a select-slider
    offers, so arrow keys step through meaningful values and a link's exact value is still shown."""
    values = {low, high, current, *extra}
    v = 1
    while v <= high:
        if v >= low:
            values.add(v)
            if v * 3 // 2 <= high and v >= 4:
                values.add(v * 3 // 2)
        v *= 2
    return sorted(x for x in values if low <= x <= high)


def layout_label(layout: tuple[int, int, int]) -> str:
    dp, tp, pp = layout
    return f"DP {dp} × TP {tp} × PP {pp}"


def workload_parts(spec: str) -> tuple[str, float, int, int, str]:
    """(kind, reasoning scale, isl, osl, custom spec) for the workload controls."""
    head, _, rest = spec.partition(":")
    if head == "reasoning" and "," not in rest:
        return "reasoning", float(rest) if rest else 1.0, 128, 4096, spec
    if head == "fixed":
        isl, osl = (int(float(x)) for x in rest.split(","))
        return "fixed", 1.0, isl, osl, spec
    return "custom", 1.0, 128, 4096, spec  # incl. reasoning:SCALE,MAX_OSL: kept exactly as written


WORKLOAD_KINDS = {
    "reasoning": "reasoning profile (paper §III-B)",
    "fixed": "fixed ISL / OSL",
    "custom": "custom spec (reasoning:SCALE,MAX_OSL, lognormal:…)",
}


UPLOADED_MODELS_DIR = Path(tempfile.gettempdir()) / "cliffscope-models"
_CONFIG_ERROR = "_cs_config_error"
CONFIG_EXPANDER = "cs_config_json_open"  # session keys of the sidebar's expanders (True while open)
ENGINE_EXPANDER = "cs_engine_settings_open"


def _use_uploaded_config(uploader_key: str, model_key: str) -> None:
    """File-uploader callback: check a config.json with the engine's own reader, keep it under a content-addressed
    name in the temp directory, and select it as the model. Runs before the page is drawn, so it may set the
    model control."""
    st.session_state.pop(_CONFIG_ERROR, None)
    uploaded = st.session_state.get(uploader_key)
    if uploaded is None:
        return
    raw = uploaded.getvalue()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(uploaded.name).stem)[:60] or "model"
    try:
        cfg = json.loads(raw)
        if not isinstance(cfg, dict):
            raise CatalogError("a config.json must hold a JSON object")
        model_from_config(cfg, name=stem)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        st.session_state[_CONFIG_ERROR] = f"{uploaded.name}: not valid JSON ({exc}); upload a Hugging Face config.json"
        return
    except (CatalogError, KeyError, TypeError, ValueError) as exc:
        st.session_state[_CONFIG_ERROR] = f"{uploaded.name}: {exc}"
        return
    folder = UPLOADED_MODELS_DIR / f"{stem}-{hashlib.sha256(raw).hexdigest()[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_bytes(raw)
    st.session_state[model_key] = str(folder / "config.json")


def model_label(value: str) -> str:
    """Catalog names as they are; an uploaded config by its folder name."""
    path = Path(value)
    return f"{path.parent.name} (your config.json)" if path.name == "config.json" else value


def scenario_controls(*, show_layout: bool = True, show_batch: bool = True) -> Scenario:
    """Draw the controls in the sidebar and return the scenario they describe (also stored as the page's state)."""
    sc = links.scenario()
    models = data.model_names()
    gpus_catalog = data.gpu_names()
    with st.sidebar:
        st.subheader("Scenario")
        model_key = links.seed_widget("model", sc.model)
        current_model = st.session_state.get(model_key, sc.model)
        model_options = models if current_model in models else [*models, current_model]
        model = st.selectbox(
            "Model", model_options, key=model_key, format_func=model_label,
            help="Catalog models (data/models), each a Hugging Face config.json, or your own below.",
        )  # fmt: skip
        # Expanders draw their contents only when opened: a first visit's browser renders a dozen widgets fewer.
        with st.expander("Use your own config.json", key=CONFIG_EXPANDER, on_change="rerun") as box:
            if box.open:
                uploader_key = links.widget_key("model_config")
                st.file_uploader(
                    "Hugging Face config.json", type=["json"], key=uploader_key, max_upload_size=1,
                    on_change=_use_uploaded_config, args=(uploader_key, model_key),
                )  # fmt: skip
                if st.session_state.get(_CONFIG_ERROR):
                    st.error(st.session_state[_CONFIG_ERROR])
                st.caption("Dense, GQA/MHA, MLA and MoE configs are read as vLLM would. A model from a file stays in "
                           "this session: a shared link opens with the default model and says so.")  # fmt: skip
        gpu_options = [*gpus_catalog, "custom"]
        gpu_value = "custom" if sc.gpu_mem_gib is not None else sc.gpu
        if gpu_value not in gpu_options:
            try:
                gpu_value = load_gpu(gpu_value).name  # an alias such as "cpu" → "cpu-host"
            except CatalogError:
                gpu_value = DEFAULT.gpu
        c1, c2 = st.columns(2)
        gpu = c1.selectbox("GPU", gpu_options, key=links.seed_widget("gpu", gpu_value))
        gr = field_range("gpus")
        gpus = int(
            c2.number_input(
                "GPUs", min_value=gr["min"], max_value=gr["max"], step=1, key=links.seed_widget("gpus", sc.gpus)
            )
        )
        gpu_mem_gib = None
        if gpu == "custom":
            mr = field_range("gpu_mem_gib")
            gpu_mem_gib = float(
                st.number_input(
                    "Custom GPU memory (GiB)", min_value=mr["min"], max_value=mr["max"], step=mr["step"],
                    key=links.seed_widget("gpu_mem_gib", sc.gpu_mem_gib or 80.0),
                    help="Bandwidth and FLOPS are taken from the H100 entry of the catalog.",
                )
            )  # fmt: skip
            gpu_name = "custom"
        else:
            gpu_name = gpu
        trial = replace(sc, gpu=gpu_name, gpu_mem_gib=gpu_mem_gib)
        layouts = valid_layouts(gpus, data.gpus_per_node(trial))
        current = (sc.dp, sc.tp, sc.pp)
        if current not in layouts and sc.dp * sc.tp * sc.pp == gpus:
            layouts = [*layouts, current]  # a link's cross-node split (e.g. a measured CPU run's TP=2) stays shown
        wkey = links.widget_key("layout")
        if st.session_state.get(wkey) not in layouts:
            links.reseed_widget("layout", current if current in layouts else layouts[0])
        layout = current
        if show_layout:
            layout = st.selectbox(
                "Parallel layout (DP × TP × PP)", layouts, key=wkey, format_func=layout_label,
                help="Only splits with DP·TP·PP = GPUs and TP inside one node are offered.",
            )  # fmt: skip
        elif layout not in layouts:
            layout = layouts[0]

        num_requests = sc.num_requests
        if show_batch:
            nr = field_range("num_requests")
            num_requests = st.select_slider(
                "Requests in the batch",
                _ladder(nr["min"], nr["max"], sc.num_requests, (10, 50, 100, 500, 1000, 2000, 5000, 10_000)),
                key=links.seed_widget("num_requests", sc.num_requests),
            )
        sr = field_range("max_num_seqs")
        max_num_seqs = st.select_slider(
            "max_num_seqs (running sequences)", _ladder(sr["min"], sr["max"], sc.max_num_seqs),
            key=links.seed_widget("max_num_seqs", sc.max_num_seqs),
        )  # fmt: skip
        br = field_range("max_num_batched_tokens")
        max_num_batched_tokens = st.select_slider(
            "max_num_batched_tokens (tokens per step)", _ladder(br["min"], br["max"], sc.max_num_batched_tokens),
            key=links.seed_widget("max_num_batched_tokens", sc.max_num_batched_tokens),
        )  # fmt: skip

        workload = _workload_controls(sc)

        ur = field_range("gpu_memory_utilization")
        gpu_memory_utilization = st.slider(
            "gpu_memory_utilization", min_value=ur["min"], max_value=ur["max"], step=ur["step"],
            key=links.seed_widget("gpu_memory_utilization", sc.gpu_memory_utilization),
        )  # fmt: skip
        block_size = st.selectbox(
            "KV block size (tokens)", field_range("block_size")["choices"],
            key=links.seed_widget("block_size", sc.block_size),
        )  # fmt: skip
        with st.expander("More engine settings", key=ENGINE_EXPANDER, on_change="rerun") as box:
            # closed: the scenario keeps its settings, max_model_len held within the (maybe new) model's
            advanced = (
                _advanced_controls(sc, model)
                if box.open
                else {"max_model_len": _max_model_len(sc.max_model_len, model)}
            )
    new = replace(
        sc, model=model, gpu=gpu_name, gpu_mem_gib=gpu_mem_gib, gpus=gpus, dp=layout[0], tp=layout[1], pp=layout[2],
        num_requests=int(num_requests), max_num_seqs=int(max_num_seqs),
        max_num_batched_tokens=int(max_num_batched_tokens), workload=workload,
        gpu_memory_utilization=round(float(gpu_memory_utilization), 4), block_size=int(block_size), **advanced,
    )  # fmt: skip
    links.set_scenario(new)
    return new


def _workload_controls(sc: Scenario) -> str:
    kind, scale, isl, osl, custom = workload_parts(sc.workload)
    kind = st.radio(
        "Workload", list(WORKLOAD_KINDS), format_func=WORKLOAD_KINDS.__getitem__,
        key=links.seed_widget("workload_kind", kind), horizontal=False,
    )  # fmt: skip
    if kind == "reasoning":
        scale = st.slider(
            "Length scale (1 = the paper's lengths)", min_value=0.01, max_value=10.0, step=0.01,
            key=links.seed_widget("workload_scale", scale),
            help="Multiplies every prompt and output length; measured CPU runs use small scales.",
        )  # fmt: skip
        return "reasoning" if scale == 1.0 else f"reasoning:{scale:g}"
    if kind == "fixed":
        isl = st.slider("ISL (prompt tokens)", 1, 8192, key=links.seed_widget("workload_isl", isl))
        osl = st.slider("OSL (output tokens)", 1, 32768, key=links.seed_widget("workload_osl", osl))
        return f"fixed:{isl},{osl}"
    text = st.text_input(
        "Workload spec", key=links.seed_widget("workload_custom", custom),
        help="reasoning:SCALE,MAX_OSL, lognormal:ISL_MEDIAN,ISL_SIGMA,OSL_MEDIAN,OSL_SIGMA or fixed:ISL,OSL",
    )  # fmt: skip
    try:
        return parse_workload(text).spec
    except WorkloadError as exc:
        st.error(f"{exc}. Keeping {sc.workload!r}.")
        return sc.workload


def _max_model_len(tokens: int | None, model: str) -> int | None:
    """A max_model_len held within the model's own (None or 0: the model's), and at least the field's minimum."""
    wanted = min(tokens or 0, data.model_max_len(model))
    return None if wanted == 0 else max(wanted, field_range("max_model_len")["min"])


def _advanced_controls(sc: Scenario, model: str) -> dict[str, object]:
    c1, c2 = st.columns(2)
    dtype = c1.selectbox("dtype", field_range("dtype")["choices"], key=links.seed_widget("dtype", sc.dtype))
    quantization = c2.selectbox(
        "quantization", field_range("quantization")["choices"], key=links.seed_widget("quantization", sc.quantization)
    )
    kv_cache_dtype = c1.selectbox(
        "kv_cache_dtype", field_range("kv_cache_dtype")["choices"],
        key=links.seed_widget("kv_cache_dtype", sc.kv_cache_dtype),
    )  # fmt: skip
    seed = int(c2.number_input("seed", min_value=0, max_value=2**31 - 1, key=links.seed_widget("seed", sc.seed)))
    max_len = data.model_max_len(model)
    raw_len = int(
        st.number_input(
            f"max_model_len (tokens, 0 = the model's {max_len:,})", min_value=0, max_value=max_len, step=1024,
            key=links.seed_widget("max_model_len", min(sc.max_model_len or 0, max_len)),
        )
    )  # fmt: skip
    max_model_len = _max_model_len(raw_len, model)
    rate = float(
        st.number_input(
            "arrival rate (requests/s, 0 = all at t = 0 as in the paper)", min_value=0.0,
            max_value=field_range("arrival_rate")["max"], step=1.0,
            key=links.seed_widget("arrival_rate", sc.arrival_rate or 0.0),
        )
    )  # fmt: skip
    arrival_rate = None if rate <= 0 else max(rate, field_range("arrival_rate")["min"])
    kv_gib = float(
        st.number_input(
            "fixed KV pool per replica (GiB, 0 = from memory)", min_value=0.0, max_value=16384.0, step=1.0,
            key=links.seed_widget("kv_cache_gib", (sc.kv_cache_memory_bytes or 0) / data.GIB),
        )
    )  # fmt: skip
    kv_bytes = None if kv_gib <= 0 else max(int(kv_gib * data.GIB), field_range("kv_cache_memory_bytes")["min"])
    if sc.kv_cache_memory_bytes is not None and abs(kv_gib * data.GIB - sc.kv_cache_memory_bytes) < data.GIB / 1e6:
        kv_bytes = sc.kv_cache_memory_bytes  # keep a link's exact byte count
    async_scheduling = st.checkbox(
        "async scheduling (vLLM's default from 0.14)",
        key=links.seed_widget("async_scheduling", sc.async_scheduling),
        help="The engine core schedules the next step while the GPU runs this one, so a one-stage GPU step takes the "
        "longer of its device and host parts instead of their sum (a CPU host and PP rounds are unchanged).",
    )
    peer_to_peer = st.checkbox(
        "GPU peer-to-peer access (NVLink or PCIe P2P)",
        key=links.seed_widget("peer_to_peer", sc.peer_to_peer),
        help="Off where a container, VM or board hides peer access (vLLM logs 'Custom allreduce is disabled because "
        "your platform lacks GPU P2P capability'): TP all-reduces and PP hand-offs then cross each GPU's PCIe link.",
    )
    return {
        "dtype": dtype,
        "quantization": quantization,
        "kv_cache_dtype": kv_cache_dtype,
        "seed": seed,
        "max_model_len": max_model_len,
        "arrival_rate": arrival_rate,
        "kv_cache_memory_bytes": kv_bytes,
        "async_scheduling": bool(async_scheduling),
        "peer_to_peer": bool(peer_to_peer),
    }
