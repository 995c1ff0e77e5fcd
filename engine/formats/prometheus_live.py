"""Read one server's vLLM and DCGM series over a window straight from a Prometheus server (``/api/v1/query_range``).

The responses are exactly what a user would save as a query_range export, so they go through the same reader and
validation (engine/formats/prometheus.py) and land through the same all-or-nothing write: ``fetch_window`` returns the
bytes of a JSON array of responses, and the store ingests those bytes like an upload.

Two range queries, each one selector over ``__name__`` (Prometheus anchors the regex): the vLLM series read here
(gauges, counters, the latency histograms' buckets/sums/counts, cache_config_info) with the user's ``selector``, and
the DCGM series with ``dcgm_selector`` (DCGM runs as another scrape target, so a vLLM selector such as
``job="vllm"`` would not match it). The step defaults to the window / 10,000, at least 1 s, inside Prometheus'
11,000-points-per-series limit. Only the standard library talks HTTP here (the dashboard's install stays small).
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.formats import dcgm, prometheus
from engine.formats.model import ValidationError

MAX_POINTS = 11_000  # Prometheus refuses a range query with more points per series
TIMEOUT_S = 60.0
_MATCHERS = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*,?\s*)*$')


@dataclass(frozen=True)
class LiveQuery:
    """One window of one server: where Prometheus answers, when, and which series are that server's."""

    url: str  # e.g. http://127.0.0.1:9090 (the API's base, without /api/v1)
    start: float  # unix seconds
    end: float
    selector: str = ""  # label matchers for the vLLM series, e.g. instance="10.0.0.5:8000"
    dcgm_selector: str = ""  # label matchers for the DCGM series, e.g. Hostname="node-1"
    step_s: float | None = None

    @property
    def display(self) -> str:
        host = urllib.parse.urlsplit(self.url).netloc or self.url
        start = datetime.fromtimestamp(self.start, UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"prometheus {host} {start} +{self.end - self.start:g}s"


def parse_time(text: str, field: str) -> float:
    """RFC 3339 (``2026-12-02T12:00:00Z``) or unix seconds, as Prometheus' own API takes them."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError.one(
            "prometheus", f"{text!r} is not a time", "write RFC 3339 (2026-12-02T12:00:00Z) or unix seconds",
            column=field,
        ) from None  # fmt: skip
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def check(query: LiveQuery) -> None:
    """Refuse a query that cannot be right before sending it: the message names the option."""
    parts = urllib.parse.urlsplit(query.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError.one("prometheus", f"{query.url!r} is not an http(s) URL", "e.g. http://host:9090",
                                  column="--prometheus")  # fmt: skip
    if not (math.isfinite(query.start) and math.isfinite(query.end)) or query.end <= query.start:
        raise ValidationError.one("prometheus", "the window is empty or reversed", "give --end after --start",
                                  column="--end")  # fmt: skip
    for option, selector in (("--selector", query.selector), ("--dcgm-selector", query.dcgm_selector)):
        if selector and not _MATCHERS.match(selector.strip().strip("{}")):
            raise ValidationError.one(
                "prometheus", f"{selector!r} is not a list of label matchers",
                'write e.g. instance="10.0.0.5:8000",job="vllm"', column=option,
            )  # fmt: skip


def fetch_window(query: LiveQuery) -> bytes:
    """The query_range responses for the window, as the bytes of one JSON array (what an export file holds)."""
    check(query)
    step = query.step_s or max(1.0, (query.end - query.start) / 10_000)
    if (query.end - query.start) / step > MAX_POINTS:
        raise ValidationError.one(
            "prometheus", f"step {step:g} s gives more than {MAX_POINTS:,} points per series",
            f"use a step of at least {(query.end - query.start) / MAX_POINTS:.3g} s", column="--step",
        )  # fmt: skip
    vllm_names = sorted(n for n in prometheus.WANTED if not dcgm.is_dcgm(n))
    responses = [
        _query_range(query, _selector(vllm_names, query.selector), step, "--selector"),
        _query_range(query, _selector(sorted(dcgm.COLUMN_OF), query.dcgm_selector), step, "--dcgm-selector"),
    ]
    return json.dumps(responses, separators=(",", ":")).encode()


def _selector(names: list[str], matchers: str) -> str:
    pattern = "|".join(re.escape(name) for name in names)
    extra = matchers.strip().strip("{}").strip().rstrip(",")
    return "{" + f'__name__=~"{pattern}"' + (f",{extra}" if extra else "") + "}"


def _query_range(query: LiveQuery, promql: str, step: float, option: str) -> dict:
    params = urllib.parse.urlencode({"query": promql, "start": repr(query.start), "end": repr(query.end),
                                     "step": f"{step:g}"})  # fmt: skip
    url = query.url.rstrip("/") + "/api/v1/query_range"
    request = urllib.request.Request(url, data=params.encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            body = response.read(512 * 1024**2 + 1)
    except urllib.error.HTTPError as exc:
        reason = _prometheus_error(exc.read(65536)) or f"HTTP {exc.code}"
        raise ValidationError.one(query.display, f"Prometheus refused the query: {reason}",
                                  f"check {option} and the window", column=option) from None  # fmt: skip
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ValidationError.one(query.display, f"cannot reach {url} ({reason})",
                                  "check --prometheus (the server's base URL, e.g. http://host:9090)",
                                  column="--prometheus") from None  # fmt: skip
    try:
        decoded = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValidationError.one(query.display, f"{url} did not answer with JSON", "is --prometheus a Prometheus?",
                                  column="--prometheus") from None  # fmt: skip
    if not isinstance(decoded, dict) or decoded.get("status") != "success":
        raise ValidationError.one(query.display, f"Prometheus answered {str(decoded)[:160]}",
                                  f"check {option}", column=option)  # fmt: skip
    return decoded


def _prometheus_error(body: bytes) -> str | None:
    try:
        decoded = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return str(decoded.get("error"))[:200] if isinstance(decoded, dict) and decoded.get("error") else None
