"""The shipped published-runs report is the one this engine and these records produce.

The dashboard and ``validate`` show ``data/published/fidelity-report.json`` instead of scoring for minutes; that is
honest only while the file matches both the records and the engine that scored them."""

from engine.fidelity.engine_digest import engine_digest, fingerprinted_files
from engine.fidelity.published_fit import REPORT_FILE, records_digest, records_of, shipped_report

REGENERATE = "python -m engine validate --published --export-published data/published/fidelity-report.json"


def test_the_shipped_report_was_computed_by_this_engine_from_these_records() -> None:
    records, _ = records_of(None)
    assert shipped_report(records_digest(records)) is not None, (
        f"{REPORT_FILE.name} is stale (the engine or the published records changed since it was exported): "
        f"run `{REGENERATE}` and commit it"
    )


def test_the_fingerprint_covers_the_step_model_the_memory_rules_and_the_catalogs() -> None:
    names = {p.name for p in fingerprinted_files()}
    assert {"perf.py", "memory.py", "vllm_rules.py", "gpus.toml", "config.json"} <= names
    assert len(engine_digest()) == 16


def test_comments_and_docstrings_do_not_stale_the_report_but_code_does(tmp_path) -> None:
    from engine.fidelity.engine_digest import _code_of

    a, b, c = (tmp_path / f"{n}.py" for n in "abc")
    a.write_text('"""One docstring."""\n\ndef f(x):\n    """Why."""\n    return x + 1  # a comment\n')
    b.write_text('"""Another docstring."""\n\n\ndef f(x):\n    return x + 1\n')
    c.write_text("def f(x):\n    return x + 2\n")
    assert _code_of(a) == _code_of(b) != _code_of(c)
