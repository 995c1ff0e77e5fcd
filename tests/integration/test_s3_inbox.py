"""An S3 inbox against a real S3 API (moto's server mode on 127.0.0.1): bundles land atomically, a reader listing
the bucket never sees half of one, and ``python -m engine import --inbox s3://...`` files them under done/ or
rejected/ and lists the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from engine.formats import DEFAULT_LIMITS
from engine.formats.bundles import read_bundle_zip
from engine.objectstore import S3Inbox, list_bundles, upload_bundle
from tests.support.run_bundles import make_bundle, run_tables
from tests.support.s3_server import S3Endpoint, aws_environment

REPO = Path(__file__).resolve().parents[2]


def new_bucket(endpoint: S3Endpoint) -> str:
    name = f"cliffscope-{uuid.uuid4().hex[:10]}"
    endpoint.client().create_bucket(Bucket=name)
    return name


def engine_cli(endpoint: S3Endpoint, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | endpoint.env
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_reader_never_sees_half_a_bundle(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    inbox = S3Inbox.parse(f"s3://{new_bucket(s3_endpoint)}/team/inbox")
    bundles = [
        make_bundle(tmp_path / "b", f"s3-atomic-{i}", tables=run_tables(num_samples=20_000, seed=i)) for i in range(6)
    ]
    seen: dict[str, int] = {}
    errors: list[BaseException] = []
    done = threading.Event()

    with aws_environment(s3_endpoint.env):
        client = s3_endpoint.client()

        def reader() -> None:
            try:
                while not done.is_set():
                    for key in list_bundles(inbox, client=client):
                        data = client.get_object(Bucket=inbox.bucket, Key=key)["Body"].read()
                        run = read_bundle_zip(data, key, DEFAULT_LIMITS)  # raises on a partial object
                        seen[key] = run.tables["engine_samples"].num_rows
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for bundle in bundles:
                assert upload_bundle(bundle, inbox, "complete", client=client) == inbox.key(f"{bundle.name}.zip")
        finally:
            time.sleep(0.3)
            done.set()
            thread.join(timeout=60)
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=inbox.bucket).get("Contents", [])]
    assert not errors, errors[:2]
    assert sorted(keys) == sorted(inbox.key(f"{b.name}.zip") for b in bundles)  # no temporary key left behind
    assert seen and all(n == 20_000 for n in seen.values())


def test_engine_import_ingests_the_bucket(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    inbox = S3Inbox.parse(f"s3://{new_bucket(s3_endpoint)}/inbox")
    good = make_bundle(tmp_path / "b", "s3-good-run")
    bad = make_bundle(tmp_path / "b", "s3-bad-run", num_devices=0)
    with aws_environment(s3_endpoint.env):
        client = s3_endpoint.client()
        upload_bundle(good, inbox, "complete", client=client)
        upload_bundle(bad, inbox, "complete", client=client)
    db = str(tmp_path / "s3.duckdb")
    result = engine_cli(s3_endpoint, "import", "--inbox", inbox.url, "--db", db, "--json")
    assert result.returncode == 2, result.stderr  # one file rejected
    report = json.loads(result.stdout)
    assert [r["file"] for r in report["landed"]] == ["s3-good-run.zip"]
    assert [r["file"] for r in report["rejected"]] == ["s3-bad-run.zip"]
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=inbox.bucket).get("Contents", []))
    assert keys == [
        "inbox/done/s3-good-run.zip",
        "inbox/rejected/s3-bad-run.zip",
        "inbox/rejected/s3-bad-run.zip.reason.txt",
    ]
    runs = engine_cli(s3_endpoint, "runs", "--db", db, "--json")
    assert [r["run_id"] for r in json.loads(runs.stdout)["runs"]] == ["s3-good-run"]
    again = engine_cli(s3_endpoint, "import", "--inbox", inbox.url, "--db", db, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["landed"] == []  # nothing waiting any more
