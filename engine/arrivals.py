"""How `vllm bench serve` sends its requests, and the OpenAI frontend they pass through, as the simulator sees them.

The benchmark client (vLLM's ``vllm/benchmarks/serve.py``, read in vllm 0.32.0: ``get_request`` and ``benchmark``):

- ``request_rate = inf`` (its default) sends every request at t = 0.
- A finite rate draws inter-arrival gaps from a gamma distribution with shape = burstiness and scale =
  1 / (rate · burstiness) (burstiness 1: a Poisson process; < 1 burstier; ``inf``: evenly spaced 1 / rate), takes
  their running sum and rescales it so the last request is sent at exactly ``num_prompts / rate``. The first request
  waits for its own gap too. The clock starts before the first gap, which is the benchmark's duration's t = 0.
- ``max_concurrency = C`` wraps every request in an ``asyncio.Semaphore(C)``: a request whose time has come waits for
  a free slot, and the slots are handed out first come first served. Each request's own clock (its ``start_time``,
  from which TTFT and latency are measured) starts when it gets the slot and is sent, not when it was drawn. The
  slot frees when the client has read the request's last streamed chunk.

The client draws its gaps from NumPy's global generator after the dataset has drawn its own, so a seed reproduces the
distribution, not the benchmark's exact sample; ``send_times`` uses its own PCG64 stream, deterministic for a seed.

The frontend (the OpenAI API server process, separate from the engine core) is a ``FrontendCost``: serial work per
request at intake (parsing, the hand-off to the engine core), so requests reach the engine core no faster than one
per ``request_s``; ``step_s`` per engine step (the one output message each step sends it) and ``token_s`` per
output token on the way out, so a chunk reaches the client ``step_s + token_s`` after its step. Its figures are
measured (scripts/measure_api_overhead.py, docs/methods.md) or fitted per device.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np


class ArrivalError(ValueError):
    """A client or frontend setting that cannot be used; the message names the field and the fix."""


@dataclass(frozen=True)
class ArrivalProcess:
    """`vllm bench serve`'s --request-rate, --burstiness and --max-concurrency (same names, same defaults)."""

    request_rate: float = math.inf  # requests/s; inf: all sent at t = 0
    burstiness: float = 1.0  # gamma shape; 1: Poisson
    max_concurrency: int | None = None  # None: no cap (an open loop)

    def __post_init__(self) -> None:
        if not (self.request_rate > 0):
            raise ArrivalError(f"request_rate must be > 0 (inf: all at once), got {self.request_rate}")
        if not (self.burstiness > 0):
            raise ArrivalError(f"burstiness must be > 0 (1: Poisson), got {self.burstiness}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ArrivalError(f"max_concurrency must be at least 1 (or unset), got {self.max_concurrency}")

    @property
    def closed(self) -> bool:
        """A concurrency cap makes the client a closed loop: a request is sent only when a slot frees."""
        return self.max_concurrency is not None

    def send_times(self, num_requests: int, seed: int = 0) -> np.ndarray:
        """When each request's turn comes (before any concurrency cap), seconds from the benchmark's start."""
        if num_requests < 1:
            raise ArrivalError(f"num_prompts must be at least 1, got {num_requests}")
        n, rate = num_requests, self.request_rate
        if math.isinf(rate):
            return np.zeros(n)
        if math.isinf(self.burstiness):
            gaps = np.full(n, 1.0 / rate)
        else:
            rng = np.random.Generator(np.random.PCG64(seed))
            gaps = rng.gamma(shape=self.burstiness, scale=1.0 / (rate * self.burstiness), size=n)
        times = np.cumsum(gaps)
        if times[-1] > 0:
            times *= (n / rate) / times[-1]  # the client's own rescaling: the last one at num_prompts / rate
        return times


@dataclass(frozen=True)
class FrontendCost:
    """The OpenAI API server's own serial work: per request at intake, per output token on the way out."""

    request_s: float = 0.0
    token_s: float = 0.0
    step_s: float = 0.0
    source: str = "not modelled"

    def __post_init__(self) -> None:
        for name in ("request_s", "token_s", "step_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ArrivalError(f"frontend {name} must be a finite number >= 0 seconds, got {value}")

    @property
    def chunk_delay_s(self) -> float:
        """From the engine core's step end to the client's chunk: the step's message, then the token."""
        return self.step_s + self.token_s

    def work_s(self, requests: int, output_tokens: int, engine_steps: int) -> float:
        """The frontend's serial work for a run (its utilisation is this over the run's duration)."""
        return requests * self.request_s + output_tokens * self.token_s + engine_steps * self.step_s


def frontend_intake(send_s: np.ndarray, request_s: float) -> np.ndarray:
    """Engine-core arrival of requests sent at ``send_s`` (in send order) through one serial intake of
    ``request_s`` each: arrival_i = max(send_i, arrival_{i−1}) + request_s. It caps the rate at 1 / request_s."""
    if request_s <= 0:
        return np.asarray(send_s, dtype=float).copy()
    out = np.empty(len(send_s))
    free = 0.0
    for i, s in enumerate(np.asarray(send_s, dtype=float).tolist()):
        free = (s if s > free else free) + request_s
        out[i] = free
    return out


class ClientLoop:
    """The bench client's concurrency cap in front of one replica, driven by the simulator as requests finish.

    Requests are sent in index order: the first ``slots`` at their own send times, each later one at
    max(its send time, the earliest slot freed and not yet taken), a slot freeing ``chunk_delay_s`` after the
    engine core finished a request (the client reads its last chunk then). ``engine_arrival`` (inf until sent) is
    what the replica driver reads as arrival times; it stays non-decreasing, so the driver's arrival order is index
    order.
    """

    def __init__(self, send_open: np.ndarray, slots: int, frontend: FrontendCost) -> None:
        self.open = np.asarray(send_open, dtype=float)
        if len(self.open) > 1 and (np.diff(self.open) < 0).any():
            raise ArrivalError("send times must be non-decreasing (the client sends in order)")
        self.frontend = frontend
        n = len(self.open)
        self.sent = np.full(n, math.inf)
        self.engine_arrival = np.full(n, math.inf)
        self._intake_free = 0.0
        self._next = 0
        self._slot_free: list[float] = []  # free times of slots not yet taken (a heap)
        for _ in range(min(slots, n)):
            self._send(0.0)

    def _send(self, slot_free_s: float) -> None:
        i = self._next
        s = max(float(self.open[i]), slot_free_s)
        self.sent[i] = s
        self._intake_free = max(s, self._intake_free) + self.frontend.request_s
        self.engine_arrival[i] = self._intake_free
        self._next += 1

    def on_finished(self, finish_s: np.ndarray) -> None:
        """Requests finished in the engine core at these times (any order): their slots go to the next requests."""
        for f in np.sort(np.asarray(finish_s, dtype=float)).tolist():
            heapq.heappush(self._slot_free, f + self.frontend.chunk_delay_s)
        while self._slot_free and self._next < len(self.open):
            self._send(heapq.heappop(self._slot_free))

    @property
    def pending(self) -> bool:
        """Requests still to be sent (their engine arrival is not known yet)."""
        return self._next < len(self.open)
