"""Request and replica state of the simulator: a request's fate in a window, the running batch in vLLM's names, the
per-request outcomes, and the trace points and busy-time totals a replica run leaves behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class Fate(IntEnum):
    """What became of a running position by the end of a decode window (the window's ``fate`` records)."""

    RUNNING = 0  # runs on past the window's end
    PREEMPTED = 1  # popped from the tail: back to the front of ``waiting``, its progress forgotten
    FINISHED = 2  # its last token came; its blocks were freed after that step


def _empty() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


@dataclass
class Running:
    """vLLM's ``running`` list as arrays in running order (the tail is the most recently admitted, preempted
    first), so a window of decode steps updates it with a few whole-array operations and preemption truncates it."""

    request_id: np.ndarray = field(default_factory=_empty)
    num_computed_tokens: np.ndarray = field(default_factory=_empty)
    num_output_tokens: np.ndarray = field(default_factory=_empty)
    num_blocks: np.ndarray = field(default_factory=_empty)  # blocks held: ceil(num_computed_tokens / block_size)
    num_prompt_tokens: np.ndarray = field(default_factory=_empty)
    max_tokens: np.ndarray = field(default_factory=_empty)

    def __len__(self) -> int:
        return len(self.request_id)

    def tokens_wanted(self) -> np.ndarray:
        """``num_tokens − num_computed_tokens`` of each: 1 when decoding, the rest of the (re)prefill otherwise."""
        return self.num_prompt_tokens + self.num_output_tokens - self.num_computed_tokens

    def select(self, keep: slice | np.ndarray) -> Running:
        return Running(
            self.request_id[keep],
            self.num_computed_tokens[keep],
            self.num_output_tokens[keep],
            self.num_blocks[keep],
            self.num_prompt_tokens[keep],
            self.max_tokens[keep],
        )


@dataclass
class Outcomes:
    """Per-request results of one replica's run (indexed like its request list)."""

    first_scheduled_s: np.ndarray
    first_token_s: np.ndarray
    finished_s: np.ndarray
    num_preemptions: np.ndarray
    generated_tokens: np.ndarray  # of requests not running: kept across a preemption, final once finished

    @classmethod
    def empty(cls, n: int) -> Outcomes:
        return cls(
            np.full(n, np.nan),
            np.full(n, np.nan),
            np.full(n, np.nan),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
        )


class TracePoints:
    """Per-replica records at step/jump ends (cumulative counters, so any later binning conserves totals).

    Windows add their records as whole arrays (tens of thousands per run), general steps one row at a time;
    ``finish`` joins them, in order, into one array per field."""

    FIELDS = (
        "t",
        "running",
        "waiting",
        "used_blocks",
        "prompt_total",
        "gen_total",
        "preempt_total",
        "bytes_total",
        "flops_total",
    )
    INT_FIELDS = frozenset({"running", "waiting", "used_blocks", "preempt_total"})

    def __init__(self) -> None:
        self._rows: list[tuple[float, ...]] = []
        self._blocks: list[tuple[np.ndarray, ...]] = []
        self.t = self.running = self.waiting = self.used_blocks = self.preempt_total = np.empty(0)
        self.prompt_total = self.gen_total = self.bytes_total = self.flops_total = np.empty(0)

    def row(self, *values: float) -> None:
        self._rows.append(values)

    def block(self, *columns: np.ndarray) -> None:
        self._flush_rows()
        self._blocks.append(columns)

    def _flush_rows(self) -> None:
        if self._rows:
            self._blocks.append(tuple(np.array(self._rows, dtype=float).T))
            self._rows = []

    def finish(self) -> None:
        self._flush_rows()
        for k, name in enumerate(self.FIELDS):
            col = np.concatenate([b[k] for b in self._blocks])
            setattr(self, name, col.astype(np.int64) if name in self.INT_FIELDS else col.astype(float))


@dataclass
class BusyTotals:
    """Where the replicas' busy time went (the summary's ``time_fractions`` and bound regime)."""

    compute_s: float = 0.0
    memory_s: float = 0.0
    comm_s: float = 0.0
    overhead_s: float = 0.0
    busy_s: float = 0.0
    steps: int = 0
