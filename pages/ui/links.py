"""The URL is the state: the scenario and each page's own choices live in the query string.

Why not ``bind="query-params"`` on each widget: one control (the DP×TP×PP split) maps to three URL keys, a tampered
value must be reported rather than silently dropped, and old links must be migrated — so the URL is read once per
load through ``engine.scenario.scenario_from_params`` (which names what it reset) and written back after each run.

Session keys:
- ``_cs_scenario``: the current Scenario (survives page switches; widgets are seeded from it).
- ``_cs_page_params``: page-specific values (selected runs, cliff-map axes, filters), raw strings.
- ``_cs_written`` / ``_cs_recent_writes``: the params last written to the URL, to tell our own writes from a link
  or history navigation.
- ``_cs_notices``: what a link carried that could not be used, shown until dismissed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from urllib.parse import urlencode

import streamlit as st

from engine.catalog import CatalogError, resolve_device
from engine.scenario import LINK_VERSION, Scenario, scenario_from_params, scenario_to_params, valid_layouts

SCENARIO_KEYS = frozenset(f.name for f in fields(Scenario))
VERSION_KEY = "v"
# Page-specific URL keys; a key not listed here nor a Scenario field is reported as unknown.
PAGE_KEYS = frozenset(
    {
        "tab",  # Explore: which panel is open
        "map_x",  # Explore: cliff-map axes and metric
        "map_y",
        "map_metric",
        "compare",  # Explore: measured run overlaid (run id)
        "runs",  # Runs: selected run ids, comma-separated
        "f_model",  # Runs: filters
        "f_device",
        "f_layout",
        "f_source",
        "f_status",
        "metric",  # Runs: per-request distribution shown
        "align",  # Runs: timelines aligned at start or cliff onset
        "run",  # Upload: the run just ingested
        "fig",  # Fidelity: the figure in the predicted-vs-measured scatter
        "tune",  # Planner: rank each layout at its own knee (1)
        "slo",  # Planner: SLOs of that ranking (engine.knee.parse_slo text)
        "cliff",  # Planner: cliff limit of that ranking
    }
)
WIDGET_PREFIX = "ctl_"
PAGE_FILES = {
    "explore": "pages/views/explore.py",
    "runs": "pages/views/runs.py",
    "planner": "pages/views/planner.py",
    "upload": "pages/views/upload.py",
    "methods": "pages/views/methods.py",
    "fidelity": "pages/views/fidelity.py",
}

_SCENARIO = "_cs_scenario"
_PAGE = "_cs_page_params"
_RUN_PAGE = "_cs_page_params_this_run"
_WRITTEN = "_cs_written"
_NOTICES = "_cs_notices"
_FORCE_WRITE = "_cs_force_write"
_RECENT = "_cs_recent_writes"
_LAST_PAGE = "_cs_last_page"
_PAGE_NAME = "_cs_page_name"
RECENT_WRITES = 8


def current_url_params() -> dict[str, str]:
    """The query string as one string per key (the last one wins, as in Streamlit)."""
    return {k: st.query_params[k] for k in st.query_params}


def sync_from_url() -> None:
    """Call at the top of every run: load state from the URL on a fresh session or when the URL was changed
    from outside (a pasted link, browser back/forward), otherwise keep the session's state."""
    ss = st.session_state
    ss[_RUN_PAGE] = {}
    url = current_url_params()
    fresh = _SCENARIO not in ss
    # Ours: any of the last few URLs we wrote (a quick second move can arrive before the browser shows the first
    # write). Outside: anything else, or the browser's back/forward buttons.
    recent = ss.get(_RECENT, [])
    page = ss.get(_PAGE_NAME)
    switched_page = page != ss.get(_LAST_PAGE)
    ss[_LAST_PAGE] = page
    changed_outside = bool(url) and (
        _history_navigation() or switched_page or (url != ss.get(_WRITTEN) and url not in recent)
    )
    if not (fresh or changed_outside):
        return
    scenario, page_params, notices = parse_link(url)
    if fresh or any(k in SCENARIO_KEYS for k in url):
        ss[_SCENARIO] = scenario
    # else: an in-app link carrying only page choices (e.g. ?runs=…) keeps the session's scenario
    ss[_PAGE] = page_params
    ss[_NOTICES] = notices
    ss[_WRITTEN] = url
    ss[_FORCE_WRITE] = True  # an in-app link may not have put its params in the address bar: write them once
    for key in [k for k in ss if isinstance(k, str) and k.startswith(WIDGET_PREFIX)]:
        del ss[key]  # re-seed every control from the link


def _history_navigation() -> bool:
    """Whether this run was started by the browser's back/forward buttons (then the URL is the user's choice)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return bool(getattr(ctx, "is_history_navigation", False))


def parse_link(url: Mapping[str, str]) -> tuple[Scenario, dict[str, str], list[str]]:
    """Split a query string into the scenario (validated, migrated by the engine) and page-specific params."""
    scenario_params = {k: v for k, v in url.items() if k in SCENARIO_KEYS or k == VERSION_KEY}
    page_params = {k: v for k, v in url.items() if k in PAGE_KEYS}
    unknown = sorted(set(url) - SCENARIO_KEYS - PAGE_KEYS - {VERSION_KEY})
    if any(k in SCENARIO_KEYS for k in scenario_params):
        scenario, engine_notices = scenario_from_params(scenario_params)
    else:  # no scenario in the link (a bare page URL): the defaults, nothing to report
        scenario, engine_notices = Scenario(), []
    notices = [str(n) for n in engine_notices]
    scenario, layout_notice = _valid_layout(scenario)
    if any(k in url for k in ("dp", "tp", "pp")):  # a link without a split (e.g. for the Planner) gets pure DP quietly
        notices += layout_notice
    notices += [f"`{k}` is not a setting of cliffscope and was ignored." for k in unknown]
    return scenario, page_params, notices


def _valid_layout(sc: Scenario) -> tuple[Scenario, list[str]]:
    """A link's DP×TP×PP must be one of the splits the Explore control offers for its GPU count."""
    try:
        per_node = resolve_device(sc.gpu, sc.gpu_mem_gib).gpus_per_node
    except CatalogError:
        per_node = 8
    layouts = valid_layouts(sc.gpus, per_node)
    if (sc.dp, sc.tp, sc.pp) in layouts or sc.dp * sc.tp * sc.pp == sc.gpus:
        return sc, []  # a split across nodes is shown as the link has it (e.g. a measured CPU run's TP=2)
    dp, tp, pp = layouts[0]
    note = f"layout dp={sc.dp}, tp={sc.tp}, pp={sc.pp} is not a valid split of {sc.gpus} GPUs; reset to DP {dp}"
    return replace(sc, dp=dp, tp=tp, pp=pp), [note]


def scenario() -> Scenario:
    """The scenario every page shows (set by the link, then by the controls)."""
    return st.session_state[_SCENARIO]


def set_scenario(value: Scenario) -> None:
    st.session_state[_SCENARIO] = value


def page_param(key: str) -> str | None:
    """A page-specific value from the link or the last choice on that page (raw string), or None."""
    assert key in PAGE_KEYS, key
    return st.session_state.get(_PAGE, {}).get(key)


def set_page_param(key: str, value: str | None) -> None:
    """Record a page's choice; only params set during this run go into this page's URL. None = default."""
    assert key in PAGE_KEYS, key
    store = st.session_state.setdefault(_PAGE, {})
    if value is None or value == "":
        store.pop(key, None)
        return
    store[key] = value
    st.session_state.setdefault(_RUN_PAGE, {})[key] = value


def wanted_params() -> dict[str, str]:
    """What the URL should say now: version, the scenario's non-default fields, this page's own choices."""
    params = scenario_params(scenario())
    params.update(st.session_state.get(_RUN_PAGE, {}))
    return params


def write_url() -> dict[str, str]:
    """Call at the end of every run: put the current state in the address bar (only when it changed)."""
    params = wanted_params()
    if params != current_url_params() or st.session_state.pop(_FORCE_WRITE, False):
        st.query_params.from_dict(params)
    st.session_state[_WRITTEN] = params
    recent = [p for p in st.session_state.get(_RECENT, []) if p != params]
    st.session_state[_RECENT] = [*recent, params][-RECENT_WRITES:]
    return params


def share_url(params: Mapping[str, str]) -> str:
    """The full link for the current page (relative when the browser's URL is unknown, as in tests)."""
    base = st.context.url or ""
    return f"{base}?{urlencode(params)}"


def app_origin() -> str:
    """scheme://host:port of the app as the browser sees it ("" when unknown, e.g. in AppTest)."""
    from urllib.parse import urlparse

    url = st.context.url
    if not url:
        return ""
    parts = urlparse(url)
    return f"{parts.scheme}://{parts.netloc}"


def scenario_params(sc: Scenario) -> dict[str, str]:
    """A scenario as link params: the version and every field that differs from the defaults."""
    params = {VERSION_KEY: str(LINK_VERSION)}
    params.update({k: str(v) for k, v in scenario_to_params(sc).items() if k != VERSION_KEY})
    return params


def explore_link(overrides: Mapping[str, object], base: Scenario | None = None) -> str:
    """A relative link that opens Explore on ``base`` with ``overrides`` (e.g. a layout from the Planner)."""
    sc = replace(base or scenario(), **overrides)
    return f"/explore?{urlencode(scenario_params(sc))}"


def notices() -> list[str]:
    return list(st.session_state.get(_NOTICES, []))


def dismiss_notices() -> None:
    st.session_state[_NOTICES] = []


def show_notices() -> None:
    """The link notice: visible at the top of the page. Values that were reset are a warning naming each one;
    an older link that was read in the current format is only said."""
    items = notices()
    if not items:
        return
    migrated = [n for n in items if n.startswith("link ")]
    reset = [n for n in items if not n.startswith("link ")]
    with st.container(border=True, key="link_notice"):
        if reset:
            st.warning(
                "**This link had values cliffscope could not use; they were reset to defaults.**\n\n"
                + "\n".join(f"- {n}" for n in reset),
                icon=":material/warning:",
            )
        if migrated:
            st.info("**This link was made by an older version and was updated.** " + "; ".join(migrated) + ".",
                    icon=":material/update:")  # fmt: skip
        st.button("Dismiss", key="dismiss_link_notice", on_click=dismiss_notices)


def set_page_name(name: str) -> None:
    """The router names the page being drawn; control keys carry it, so a control on a page just switched to is
    seeded from the scenario instead of inheriting another page's widget state."""
    st.session_state[_PAGE_NAME] = name or "home"


def widget_key(key: str) -> str:
    """The session key of a control: ``ctl_<page>_<name>``."""
    return f"{WIDGET_PREFIX}{st.session_state.get(_PAGE_NAME, 'home')}_{key}"


def seed_widget(key: str, value: object) -> str:
    """Give a control its value from the state before it is drawn (never via ``value=``, to avoid Streamlit's
    'default and session state' warning). Returns the widget key."""
    wkey = widget_key(key)
    if wkey not in st.session_state:
        st.session_state[wkey] = value
    return wkey


def reseed_widget(key: str, value: object) -> None:
    """Force a control to a value on its next draw (e.g. a layout no longer valid for the GPU count)."""
    st.session_state[widget_key(key)] = value


def csv_list(value: str | None) -> list[str]:
    """Split a comma-separated URL value into its non-empty items."""
    return [item for item in (value or "").split(",") if item]


def join_list(items: Iterable[str]) -> str:
    return ",".join(items)
