"""A bench record's mean TPOT derived from its mean E2EL and mean TTFT (engine.fidelity.published_fit
.derived_mean_tpot_ms): exact when every request generated the same L tokens, and never otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.fidelity.published_fit import PUBLISHED_DIR, bench_case, derived_mean_tpot_ms, served_module
from engine.formats.published import record_from_text

RUNPOD = PUBLISHED_DIR / "bench" / "runpod-qwen3-8b-h100-tp1-max-seqs-512-random-128-128-rps90-c128.toml"


def _record(path: Path, replace: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    text = path.read_text()
    for old, new in (replace or {}).items():
        assert old in text
        text = text.replace(old, new)
    return record_from_text(text)


def test_every_request_at_l_tokens_gives_the_mean_tpot_exactly() -> None:
    record = _record(RUNPOD)
    # 1,024 requests × 128 tokens = 131,072 generated: (1521.71 − 50.79) / 127 ms.
    assert derived_mean_tpot_ms(record) == pytest.approx((1521.71 - 50.79) / 127)
    # Its mean ITL (all gaps pooled) is the same figure to within 1 %.
    assert derived_mean_tpot_ms(record) == pytest.approx(record.figure("mean_itl_ms"), rel=0.01)
    case = bench_case(record, served_module())
    assert case.measured["tpot_mean_s"] == pytest.approx((1521.71 - 50.79) / 127 / 1e3)
    assert "mean_tpot_ms" in case.meta["derived"]


def _quoted(label: str, value: str) -> str:
    """A result line as vLLM's bench prints it (label padded to 41 columns)."""
    return f"{label:<41}{value}"


def test_unequal_lengths_or_a_printed_tpot_derive_nothing() -> None:
    fewer = _record(RUNPOD, {
        "total_output_tokens = 131072": "total_output_tokens = 131000",
        _quoted("Total generated tokens:", "131072"): _quoted("Total generated tokens:", "131000"),
        "output_throughput = 9773.69": "output_throughput = 9768.31",
        _quoted("Output token throughput (tok/s):", "9773.69"): _quoted("Output token throughput (tok/s):", "9768.31"),
        "total_token_throughput = 19547.39": "total_token_throughput = 19542.01",
        _quoted("Total token throughput (tok/s):", "19547.39"): _quoted("Total token throughput (tok/s):", "19542.01"),
    })  # fmt: skip
    assert derived_mean_tpot_ms(fewer) is None
    assert "tpot_mean_s" not in bench_case(fewer, served_module()).measured
    itl = _quoted("Mean ITL (ms):", "11.49")
    printed = _record(RUNPOD, {
        "mean_itl_ms = 11.49": "mean_tpot_ms = 11.6\nmean_itl_ms = 11.49",
        f'"{itl}",': f'"{_quoted("Mean TPOT (ms):", "11.6")}",\n  "{itl}",',
    })  # fmt: skip
    assert derived_mean_tpot_ms(printed) is None
    assert bench_case(printed, served_module()).measured["tpot_mean_s"] == pytest.approx(0.0116)
