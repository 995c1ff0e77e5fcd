"""Cached access to the engine and the store, so a slider move recomputes only what its value changed.

The DuckDB store is one shared Store per process (``st.cache_resource``; it leases read-only connections and opens
read-write only to write, so CLI reads and imports work while the dashboard runs); each query runs on its own cursor.
Store queries are cached with ``st.cache_data`` (a leading underscore keeps the store out of the cache key) and
cleared together after an upload or a delete. Predictions are cached per scenario.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import astuple
from typing import Any

import numpy as np
import polars as pl
import streamlit as st

from engine.catalog import list_gpus, list_models, load_model, resolve_device
from engine.memory import MemoryPlan, memory_plan_for
from engine.objectstore import ObjectStoreError
from engine.scenario import Scenario
from engine.store import Store, open_store

GIB = 1024**3


_opening_lock = threading.Lock()
_opening: list[Future[Store]] = []  # at most one: the store being opened (or opened) for this process


def start_opening_store() -> Future[Store]:
    """Open the store on a helper thread, once per process. The first start imports the bundled runs (most of a
    second), so serve.py starts this at server start and app.py before the page runs, and the first page's
    prediction and charts are computed meanwhile; ``get_store`` then waits for it."""
    with _opening_lock:
        if _opening:
            return _opening[0]
        future: Future[Store] = Future()
        _opening.append(future)

    def work() -> None:
        try:
            future.set_result(open_store())
        except BaseException as exc:  # handed to whoever waits in get_store
            future.set_exception(exc)

    threading.Thread(target=work, name="cliffscope-open-store", daemon=True).start()
    return future


@st.cache_resource(show_spinner="Opening the run database (first start ingests the bundled runs)…")
def get_store() -> Store:
    """The process's one Store (DuckDB allows one read-write opener per file)."""
    future = start_opening_store()
    try:
        return future.result()
    except BaseException:
        with _opening_lock:  # let the next run try again (e.g. another process held the file)
            if _opening and _opening[0] is future:
                _opening.clear()
        raise


@st.cache_data(show_spinner=False)
def model_names() -> list[str]:
    return list_models()


@st.cache_data(show_spinner=False)
def gpu_names() -> list[str]:
    return list_gpus()


def gpus_per_node(scenario: Scenario) -> int:
    return resolve_device(scenario.gpu, scenario.gpu_mem_gib).gpus_per_node


@st.cache_data(show_spinner=False, max_entries=512)
def memory_plan(scenario: Scenario) -> MemoryPlan:
    return memory_plan_for(scenario)


def memory_per_gpu(plan: MemoryPlan, scenario: Scenario) -> list[dict[str, float]]:
    """One bar per pipeline stage (its TP ranks and DP replicas hold the same): weights, activations and runtime,
    KV pool, stranded (KV memory that cannot form a block the binding stage also has) and free (outside
    gpu_memory_utilization), all in GiB, from the engine's memory plan."""
    device = resolve_device(scenario.gpu, scenario.gpu_mem_gib)
    capacity = device.memory_bytes
    same = plan.tp * plan.dp
    bars = []
    for stage in plan.stages:
        kv_pool = max(plan.kv_blocks, 0) * plan.kv_page_bytes_per_layer * stage.num_layers
        stranded = max(stage.available_kv_bytes - kv_pool, 0)
        used = stage.weights_bytes + stage.activation_bytes + plan.non_torch_bytes_per_device + kv_pool + stranded
        label = f"PP stage {stage.stage}" if plan.pp > 1 else "each GPU"
        if same > 1:
            label += f" (×{same})"
        bars.append(
            {
                "label": label,
                "weights_gib": stage.weights_bytes / GIB,
                "activations_gib": (stage.activation_bytes + plan.non_torch_bytes_per_device) / GIB,
                "kv_gib": kv_pool / GIB,
                "stranded_gib": stranded / GIB,
                "free_gib": max(capacity - used, 0) / GIB,
            }
        )
    return bars


def model_max_len(name: str) -> int:
    return load_model(name).max_position_embeddings


# ------------------------------------------------------------------------------------------------ store queries


@st.cache_data(show_spinner=False, ttl=600)
def runs_table(_store: Store, **filters: Any) -> pl.DataFrame:
    return _store.runs(**{k: v for k, v in filters.items() if v})


@st.cache_data(show_spinner=False, ttl=600)
def run_timeline(_store: Store, run_id: str, max_points: int = 600) -> pl.DataFrame:
    return _store.timeline(run_id, max_points)


@st.cache_data(show_spinner=False, ttl=600)
def run_gpu_timeline(_store: Store, run_id: str, max_points: int = 600) -> pl.DataFrame:
    return _store.gpu_timeline(run_id, max_points)


@st.cache_data(show_spinner=False, ttl=600)
def run_requests(_store: Store, run_id: str) -> pl.DataFrame:
    return _store.requests(run_id)


@st.cache_data(show_spinner=False, ttl=600)
def run_meta(_store: Store, run_id: str) -> dict[str, Any] | None:
    return _store.run_meta(run_id)


@st.cache_data(show_spinner=False, ttl=600)
def run_summary(_store: Store, run_id: str) -> dict[str, Any] | None:
    return _store.measured_summary(run_id)


@st.cache_data(show_spinner=False, ttl=600)
def run_request_lengths(_store: Store, run_id: str) -> np.ndarray:
    return _store.request_lengths(run_id)


def measured_timeline(store: Store, run_id: str) -> pl.DataFrame:
    """A run's engine timeline (long form: series, t_s, value) plus the devices' memory-bandwidth utilisation
    (mean over GPUs) as the series ``hbm_bw_util`` where it was measured."""
    frame = run_timeline(store, run_id)
    gpu = run_gpu_timeline(store, run_id)
    if gpu.height and {"series", "value", "t_s"} <= set(gpu.columns):
        bw = (
            gpu.filter(pl.col("series") == "mem_bw_util")
            .drop_nulls("value")
            .group_by("t_s")
            .agg(pl.col("value").mean())
            .with_columns(pl.lit("hbm_bw_util").alias("series"), pl.lit(run_id).alias("run_id"))
        )
        if bw.height:
            frame = pl.concat([frame, bw.select(frame.columns)], how="vertical_relaxed")
    return frame


INBOX_POLL_ENV = "CLIFFSCOPE_INBOX_POLL_S"
INBOX_CHECK_EVERY_S = float(os.environ.get(INBOX_POLL_ENV) or 10.0)
_inbox_lock = threading.Lock()
_inbox_checked_at = [0.0]
_watcher: list[threading.Thread] = []


def start_inbox_watcher() -> None:
    """serve.py: ingest what lands in the inbox (a folder or s3://) every INBOX_CHECK_EVERY_S in the background,
    so a collected run shows up without anyone opening the Runs page; once per process."""
    with _inbox_lock:
        if _watcher:
            return

        def watch() -> None:
            store = start_opening_store().result()
            while True:
                time.sleep(INBOX_CHECK_EVERY_S)
                with contextlib.suppress(Exception):  # the page shows errors when someone looks
                    ingest_inbox(store)

        thread = threading.Thread(target=watch, name="cliffscope-inbox-watcher", daemon=True)
        _watcher.append(thread)
    thread.start()


def ingest_inbox(store: Store) -> list[str]:
    """Ingest bundles collectors dropped into the inbox since the last look (at most every few seconds, process
    wide); returns one line per bundle for the page to show. Cached queries are cleared when anything arrived."""
    with _inbox_lock:
        now = time.monotonic()
        if now - _inbox_checked_at[0] < INBOX_CHECK_EVERY_S * 0.9:
            return []
        _inbox_checked_at[0] = now
        try:
            reports = store.ingest_inbox()
        except ObjectStoreError as exc:  # a bucket that cannot be reached is a line on the page, not a crash
            return [f"inbox not read: {exc}"]
    if reports:
        clear_store_queries()
    return [report.summary() for report in reports]


STORE_QUERIES = (runs_table, run_timeline, run_gpu_timeline, run_requests, run_meta, run_summary, run_request_lengths)


_DERIVED_QUERIES: list[Any] = []  # cached answers other modules derive from the store (see cleared_with_store)


def cleared_with_store(fn: Any) -> Any:
    """Register a cached function whose answers come from the store, so an upload or delete clears it too."""
    _DERIVED_QUERIES.append(fn)
    return fn


def clear_store_queries() -> None:
    """After an upload or delete: every cached store answer may be stale."""
    for fn in (*STORE_QUERIES, *_DERIVED_QUERIES):
        fn.clear()


def scenario_key(scenario: Scenario) -> tuple[Any, ...]:
    """A plain tuple naming a scenario, for cache keys and comparisons."""
    return astuple(scenario)
