"""Hostile and malformed files against a real database: never an unhandled exception, never a partial write.

Generated files (the ``fuzz(N)`` budgets below): truncated or bit-flipped Parquet, wrong types, NaN/inf, negative
times, huge values, non-UTF-8, SQL-looking strings, duplicate ids, zip tricks, broken JSON and exposition text, edited
published records, edited GuideLLM reports (JSON and YAML), compressed files of every text format including a real
GuideLLM report (truncated or bit-flipped .gz/.zst/.zip, bombs, wrong or nested members, mixed encodings), and the
real ``vllm bench sweep`` folder zipped with one point truncated, re-encoded, inflated past the limit or misnamed.
Every refusal names the file (or the archive member) it is about. After each rejected file the database's row counts
are exactly what they were; an accepted file adds exactly the rows it reported, and SQL-looking text is stored as text.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.formats import Limits
from engine.store import Store, ValidationError
from tests.support.paths import TOOL_FILES
from tests.support.run_bundles import make_bundle, run_tables
from tests.support.tool_outputs import bench_result, metrics_scrapes


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples)


FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

SQLISH = [
    "'; DROP TABLE runs; --",
    '" OR 1=1 --',
    "x'); DELETE FROM requests; --",
    "../../etc/passwd",
    "run\x00id",
    "\u202egnp.exe",
    "😀",
    "Robert'); DROP TABLE engine_samples;--",
]
HOSTILE_TEXT = st.sampled_from(
    [*SQLISH, "NaN", "inf", "-inf", "1e309", "-1", "99999999999999999999999", "", " ", "null"]
)
CELL = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    HOSTILE_TEXT,
    st.text(max_size=6),
    st.integers(0, 100),
    st.floats(0, 1),
)
COLUMNS = [
    "t_s", "running", "waiting", "kv_usage", "prompt_tokens_total", "generation_tokens_total", "preemptions_total",
    "request_id", "isl", "osl", "output_tokens", "arrival_s", "first_scheduled_s", "first_token_s", "finished_s",
    "num_preemptions", "gpu_index", "sm_util", "power_w", "run_id", *SQLISH[:3],
]  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("fuzz")
    with Store(root / "fuzz.duckdb") as opened:
        opened.ingest(make_bundle(root / "seed", "seed-run"))
        yield opened


def _check(store: Store, data: bytes, name: str) -> None:
    before = store.table_counts()
    try:
        report = store.ingest_bytes(data, name)
    except ValidationError as exc:
        assert str(exc) and exc.problems[0].fix
        assert exc.problems[0].file.startswith(name), f"{exc.problems[0].file!r} does not name {name!r}"
        assert store.table_counts() == before, f"partial write from a rejected {name}"
        return
    after = store.table_counts()
    added = [r for r in report.runs if r.action == "added"]
    assert after["runs"] == before["runs"] + len(added)
    for table in ("engine_samples", "requests", "gpu_samples"):
        assert after[table] == before[table] + sum(r.rows.get(table, 0) for r in added)
    for run in added:  # whatever text came in is stored as text; the tables are all still there
        assert store.run_meta(run.run_id)["run_id"] == run.run_id
        store.delete_run(run.run_id)
    assert store.table_counts() == before


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


VALID_SAMPLES = _parquet_bytes(run_tables(num_samples=30)["engine_samples"])
VALID_REQUESTS = _parquet_bytes(run_tables(num_requests=12)["requests"])


@fuzz(200)
@given(
    base=st.sampled_from([VALID_SAMPLES, VALID_REQUESTS]),
    cut=st.integers(0, 4000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=4),
)
def test_truncated_and_corrupted_parquet(store: Store, base: bytes, cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(base[: max(4, len(base) - cut)])
    for position, value in flips:
        data[position % len(data)] = value
    _check(store, bytes(data), "fuzz.parquet")


@fuzz(250)
@given(
    columns=st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6),
    rows=st.lists(st.lists(CELL, min_size=6, max_size=6), min_size=1, max_size=8),
    as_parquet=st.booleans(),
)
def test_wrong_types_and_hostile_values_in_tables(
    store: Store, columns: list[str], rows: list[list[object]], as_parquet: bool
) -> None:
    records = [{c: row[i] for i, c in enumerate(columns)} for row in rows]
    if as_parquet:
        try:
            table = pa.Table.from_pylist(records)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return  # not representable in Parquet at all; covered as CSV/JSONL below
        _check(store, _parquet_bytes(table), "fuzz.parquet")
    else:
        _check(store, "\n".join(json.dumps(r, allow_nan=True) for r in records).encode(), "fuzz.jsonl")


@fuzz(200)
@given(
    header=st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6),
    cells=st.lists(st.lists(CELL.map(str), min_size=1, max_size=7), min_size=1, max_size=8),
    junk=st.binary(max_size=8),
    encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]),
)
def test_hostile_csv(store: Store, header: list[str], cells: list[list[str]], junk: bytes, encoding: str) -> None:
    text = ",".join(header) + "\n" + "\n".join(",".join(row) for row in cells)
    try:
        data = text.encode(encoding, errors="replace") + junk
    except UnicodeEncodeError:
        data = text.encode("utf-8") + junk
    _check(store, data, "fuzz.csv")


@fuzz(150)
@given(
    key=st.sampled_from(["input_lens", "output_lens", "ttfts", "latencies", "start_times", "errors", "model_id",
                         "date", "request_rate", "tp", "run_id", "device"]),
    index=st.integers(0, 9),
    value=st.one_of(CELL, st.none(), st.lists(CELL, max_size=3)),
    drop=st.booleans(),
)  # fmt: skip
def test_hostile_vllm_bench_json(store: Store, key: str, index: int, value: object, drop: bool) -> None:
    result = bench_result(n=10, seed=index)
    if drop:
        result.pop(key, None)
    elif isinstance(result.get(key), list):
        result[key][index] = value
    else:
        result[key] = value
    _check(store, json.dumps(result, allow_nan=True).encode(), "fuzz-bench.json")


PROM = metrics_scrapes(4, gpus=1).splitlines()  # with DCGM series


@fuzz(150)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(PROM) - 1), st.sampled_from(["drop", "value", "ts", "label", "garbage"]), CELL),
        max_size=4,
    ),
    as_range=st.booleans(),
)
def test_hostile_prometheus(store: Store, edits: list[tuple[int, str, object]], as_range: bool) -> None:
    if as_range:
        values = [[1763900000 + i, str(v)] for i, v in enumerate([1, 2, 3])]
        series = {"metric": {"__name__": "vllm:num_requests_running", "engine": "0"}, "values": values}
        for index, kind, cell in edits:
            if kind == "value":
                values[index % 3][1] = cell
            elif kind == "ts":
                values[index % 3][0] = cell
            elif kind == "label":
                series["metric"]["engine"] = str(cell)
            elif kind == "garbage":
                series["values"] = cell
        body = {"status": "success", "data": {"resultType": "matrix", "result": [series]}}
        _check(store, json.dumps(body, allow_nan=True).encode(), "fuzz-range.json")
        return
    lines = list(PROM)
    for index, kind, cell in edits:
        line = lines[index]
        if kind == "drop":
            lines[index] = ""
        elif kind == "value" and not line.startswith("#") and line.count(" ") >= 2:
            name_labels, _value, ts = line.rsplit(" ", 2)
            lines[index] = f"{name_labels} {cell} {ts}"
        elif kind == "ts" and not line.startswith("#") and " " in line:
            lines[index] = line.rsplit(" ", 1)[0] + f" {cell}"
        elif kind == "label":
            lines[index] = line.replace('engine="0"', f'engine="{cell}"')
        else:
            lines[index] = str(cell)
    _check(store, "\n".join(lines).encode("utf-8", errors="surrogatepass"), "fuzz.prom")


@fuzz(150)
@given(
    members=st.lists(
        st.tuples(
            st.sampled_from(["run.json", "b/run.json", "../run.json", "a/b/c/run.json", "engine_samples.parquet",
                             "b/requests.parquet", "requests.parquet", "/abs/run.json", "b/../../x"]),
            st.sampled_from(["valid-json", "hostile-json", "samples", "requests", "bytes"]),
        ),
        max_size=5,
    ),
    run_id=st.sampled_from(["zip-ok", *SQLISH]),
)  # fmt: skip
def test_hostile_zip_bundles(store: Store, tmp_path_factory: pytest.TempPathFactory, members, run_id: str) -> None:
    from tests.support.run_bundles import run_meta

    meta = run_meta(run_id)
    contents = {
        "valid-json": json.dumps(meta).encode(),
        "hostile-json": json.dumps({**meta, "dp": "1; DROP TABLE runs", "num_requests": 10**30}).encode(),
        "samples": VALID_SAMPLES,
        "requests": VALID_REQUESTS,
        "bytes": b"\xff\xfe\x00garbage",
    }
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        seen = set()
        for name, kind in members:
            if name in seen:
                continue
            seen.add(name)
            archive.writestr(name, contents[kind])
    _check(store, sink.getvalue(), "fuzz.zip")


FIXTURES = TOOL_FILES
GUIDELLM_FILE = FIXTURES / "guidellm-0.8-sweep.json.gz"  # a real GuideLLM 0.8.1 report (see README.md there)


def _trimmed_guidellm(benchmarks: int) -> dict:
    """The real report cut to its first benchmarks, 2 requests each and the metric blocks the reader reads (the rest,
    e.g. the 45 kB ``text`` block a benchmark, it never opens), so each generated case stays cheap."""
    report = json.loads(gzip.decompress(GUIDELLM_FILE.read_bytes()))
    read = ("request_totals", "time_to_first_token_ms", "inter_token_latency_ms", "request_latency",
            "output_token_count", "output_tokens_per_second")  # fmt: skip
    kept = []
    for bench in report["benchmarks"][:benchmarks]:
        requests = {**bench["requests"], "successful": bench["requests"]["successful"][:2]}
        kept.append({**bench, "requests": requests, "metrics": {k: bench["metrics"][k] for k in read}})
    return {**report, "benchmarks": kept}


GUIDELLM = _trimmed_guidellm(2)
TEXTS = {
    "prom": (FIXTURES / "vllm-0.32-cpu-metrics-scrapes.prom").read_bytes(),
    "json": (FIXTURES / "vllm-0.32-bench-serve-detailed.json").read_bytes(),
    "csv": b"t_s,running,waiting,kv_usage\n0,1,2,0.5\n1,3,0,0.75\n",
    "guidellm": json.dumps(_trimmed_guidellm(1), separators=(",", ":")).encode(),
}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A store whose unpacked-size limit (256 KiB) a generated bomb can pass in milliseconds."""
    with Store(
        tmp_path_factory.mktemp("fuzz-small") / "f.duckdb", limits=Limits(max_decompressed_bytes=256 * 1024)
    ) as s:
        yield s


def _mixed(text: bytes, encoding: str, at: int) -> bytes:
    """The text with its tail re-encoded (UTF-16, Latin-1 with accents): files stitched from two tools."""
    if encoding == "utf-8":
        return text
    cut = at % max(1, len(text))
    return text[:cut] + text[cut:].decode("utf-8").replace("e", "é").encode(encoding, errors="replace")


def _pack(kind: str, member: str, blob: bytes, extra: list[tuple[str, bytes]]) -> bytes:
    if kind == "gz":
        return gzip.compress(blob)
    if kind == "zst":
        return zstandard.ZstdCompressor().compress(blob)
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in [(member, blob), *extra]:
            if name not in archive.namelist():
                archive.writestr(name, data)
    return sink.getvalue()


@fuzz(200)
@given(
    kind=st.sampled_from(["gz", "zst", "zip"]),
    text=st.sampled_from(sorted(TEXTS)),
    member=st.sampled_from(["m.prom", "m.json", "d/m.csv", "../../m.csv", "m.docx", "m.csv.gz", "noext", "/abs.json"]),
    extra=st.lists(
        st.tuples(st.sampled_from(["x.csv", "y.json", "z.bin", "__MACOSX/._m", "w.zip"]), st.binary(max_size=40)),
        max_size=2,
    ),
    encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]),
    at=st.integers(0, 10_000),
    cut=st.integers(0, 200),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
    bomb=st.booleans(),
)  # fmt: skip
def test_hostile_compressed_files(
    small_store: Store, kind, text, member, extra, encoding, at, cut, flips, bomb
) -> None:
    blob = _mixed(TEXTS[text], encoding, at)
    if bomb:
        blob = blob + b"\n" * (300 * 1024)  # unpacks past the 256 KiB limit
    data = bytearray(_pack(kind, member, blob, extra))
    data = data[: max(4, len(data) - cut)]
    for position, value in flips:
        data[position % len(data)] = value
    name = {"gz": f"fuzz.{text}.gz", "zst": f"fuzz.{text}.zst", "zip": "fuzz.zip"}[kind]
    _check(small_store, bytes(data), name)


SWEEP = FIXTURES / "vllm-0.32-bench-sweep"  # the real `vllm bench sweep serve` output
SWEEP_FILES = {f"results/{f.relative_to(SWEEP).as_posix()}": f.read_bytes() for f in sorted(SWEEP.rglob("*.*"))}
POINTS = sorted(name for name in SWEEP_FILES if name.endswith("/run=0.json"))


def _member_edit(blob: bytes, edit: str, at: int) -> bytes:
    if edit == "truncate":
        return blob[: at % max(1, len(blob))]
    if edit == "bomb":
        return blob[:-1] + b" " * (300 * 1024) + blob[-1:]  # valid JSON that unpacks past the 256 KiB limit
    return _mixed(blob, edit, at)  # utf-16 / latin-1 tail: stitched from two tools


@fuzz(120)
@given(
    point=st.sampled_from(POINTS),
    edit=st.sampled_from(["none", "truncate", "bomb", "utf-16", "latin-1"]),
    rename=st.sampled_from([None, "run=0.txt", "run.json", "../run=0.json", "nested.zip", "deep/a/b/run=0.json"]),
    at=st.integers(0, 10_000),
    cut=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=2),
    wrap=st.sampled_from(["zip", "zip.gz"]),
)  # fmt: skip
def test_hostile_sweep_archives(small_store: Store, point, edit, rename, at, cut, flips, wrap) -> None:
    """The real sweep folder zipped, one point edited or misnamed, the archive cut or bit-flipped: refusals name
    the archive, and a point refused on its content names that member."""
    members = dict(SWEEP_FILES)
    blob = members.pop(point)
    blob = blob if edit == "none" else _member_edit(blob, edit, at)
    name = point if rename is None else point.rsplit("/", 1)[0] + "/" + rename
    members[name] = blob
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    data = bytearray(sink.getvalue())
    data = data[: max(4, len(data) - cut)]
    for position, value in flips:
        data[position % len(data)] = value
    display = "fuzz-sweep." + wrap
    packed = gzip.compress(bytes(data)) if wrap == "zip.gz" else bytes(data)
    _check(small_store, packed, display)
    if wrap == "zip" and not cut and not flips and rename is None and edit in ("truncate", "utf-16", "latin-1"):
        with pytest.raises(ValidationError) as refused:
            small_store.ingest_bytes(packed, display)
        assert point in str(refused.value), f"{refused.value} does not name {point}"


DETAIL = ("input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times", "errors", "generated_texts")


@fuzz(120)
@given(
    key=st.sampled_from(["duration", "completed", "failed", "total_output_tokens", "output_throughput", "mean_ttft_ms",
                         "p99_e2el_ms", "max_num_seqs", "tensor_parallel_size", "run_number", "model_id", "date"]),
    value=st.one_of(CELL, st.none(), st.lists(CELL, max_size=2)),
    as_sweep=st.booleans(),
    member=st.sampled_from(["e/SERVE-a-BENCH-b/run=0.json", "run=1.json", "a/b/c/d/run=2.json", "S/run=x.json",
                            "S/warmup.json", "../run=3.json"]),
    cut=st.integers(0, 60),
)  # fmt: skip
def test_hostile_bench_summaries_and_sweeps(store: Store, key, value, as_sweep: bool, member: str, cut: int) -> None:
    """vllm bench results without --save-detailed, alone or as the points of a sweep folder (zipped)."""
    result = {k: v for k, v in bench_result(n=5, seed=cut).items() if k not in DETAIL}
    result.update({"mean_ttft_ms": 12.5, "median_ttft_ms": 11.0, "p99_ttft_ms": 30.0, "max_num_seqs": 4})
    result[key] = value
    blob = json.dumps(result, allow_nan=True).encode()
    if not as_sweep:
        _check(store, blob[: max(1, len(blob) - cut)], "fuzz-summary.json")
        return
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        archive.writestr(member, blob)
        archive.writestr("e/SERVE-a-BENCH-b/run=9.json", json.dumps({**result, key: 1}))
        archive.writestr("e/summary.csv", b",run_number\n0,0\n")
    data = sink.getvalue()
    _check(store, data[: max(4, len(data) - cut)], "fuzz-sweep.zip")


@fuzz(100)
@given(
    path=st.sampled_from([("benchmarks",), ("metadata",), ("config", "strategy"), ("requests", "successful"),
                          ("requests", "successful", 0, "info", "timings", "request_start"),
                          ("requests", "successful", 0, "output_metrics", "text_tokens"),
                          ("metrics", "time_to_first_token_ms", "successful", "mean"),
                          ("metrics", "request_totals", "successful"), ("duration",)]),
    value=st.one_of(CELL, st.none(), st.lists(CELL, max_size=2), st.dictionaries(st.text(max_size=2), CELL)),
    as_yaml=st.booleans(),
)  # fmt: skip
def test_hostile_guidellm_reports(store: Store, path: tuple, value: object, as_yaml: bool) -> None:
    import copy

    import yaml

    report = copy.deepcopy(GUIDELLM)
    target = report if path[0] in ("benchmarks", "metadata") else report["benchmarks"][0]
    for key in path[:-1]:
        target = target[key] if isinstance(target, (dict, list)) else target
    if isinstance(target, dict) or (isinstance(target, list) and isinstance(path[-1], int)):
        target[path[-1]] = value
    if as_yaml:
        try:
            dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
            blob = yaml.dump(report, Dumper=dumper, allow_unicode=True).encode("utf-8", errors="surrogatepass")
        except yaml.YAMLError:
            return
        _check(store, blob, "fuzz-guidellm.yaml")
    else:
        _check(store, json.dumps(report, allow_nan=True).encode(), "fuzz-guidellm.json")


def test_database_intact_after_fuzzing(store: Store) -> None:
    counts = store.table_counts()
    assert counts["runs"] == 1 and store.runs()["run_id"].to_list() == ["seed-run"]
    assert store.measured_summary("seed-run")["num_requests"] == 32


def test_sql_looking_strings_are_stored_verbatim(store: Store, tmp_path: Path) -> None:
    csv = "request_id,isl,osl,arrival_s\n" + "\n".join(f'"{s.replace(chr(34), chr(34) * 2)}",5,5,0' for s in SQLISH[:4])
    report = store.ingest_bytes(csv.encode(), "sql.csv")
    (run,) = report.runs
    assert sorted(store.requests(run.run_id)["request_id"].to_list()) == sorted(SQLISH[:4])
    store.delete_run(run.run_id)


# Published records (cliffscope-published/1): a real record with one line dropped, one value replaced by a hostile
# TOML value, or raw bytes spliced in. The published table is counted too: a refused record writes nothing there.
RECORD_LINES = (
    (Path(__file__).resolve().parents[2] / "data" / "published" / "bench" / "gpustack-r1-0528-h200-tp8-sharegpt.toml")
    .read_text()
    .splitlines()
)
TOML_VALUE = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    HOSTILE_TEXT.map(json.dumps),
    st.sampled_from(["[]", "{}", "true", '["x"]', "[1, 2]", '"inf"', "-0.0", "1e400", "0"]),
)


def _published_rows(store: Store) -> int:
    return store.published_runs().height


@fuzz(100)
@given(
    index=st.integers(0, len(RECORD_LINES) - 1),
    kind=st.sampled_from(["drop", "value", "splice"]),
    value=TOML_VALUE,
    junk=st.binary(min_size=1, max_size=6),
)
def test_hostile_published_records(store: Store, index: int, kind: str, value: str, junk: bytes) -> None:
    lines = list(RECORD_LINES)
    if kind == "drop":
        del lines[index]
    elif kind == "value" and " = " in lines[index]:
        lines[index] = lines[index].split(" = ", 1)[0] + " = " + value
    data = "\n".join(lines).encode()
    if kind == "splice":
        position = len("\n".join(lines[:index]).encode())
        data = data[:position] + junk + data[position:]
    before = _published_rows(store)
    _check(store, data, "gpustack-r1-0528-h200-tp8-sharegpt.toml")
    assert _published_rows(store) == before
