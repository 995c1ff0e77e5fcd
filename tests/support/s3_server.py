"""A real S3 API for tests: moto's server mode (``python -m moto.server``) on 127.0.0.1 in its own process.

Clients reach it through the usual AWS environment variables (``AWS_ENDPOINT_URL`` and test credentials), exactly
as a collector on a cluster reaches a real bucket; nothing in the code under test knows it is moto.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.vllm_server import free_port, stop_process_group


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    env: dict[str, str]  # the AWS variables a client process needs

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )


@contextlib.contextmanager
def start_s3_server(work_dir: Path) -> Iterator[S3Endpoint]:
    """Start moto's S3 server, wait until it answers, yield its endpoint, stop it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (work_dir / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited: {(work_dir / 'moto.log').read_text()[-2000:]}")
            if _answers(url):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("moto server did not answer in 60 s")
            time.sleep(0.2)
        env = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "cliffscope-test",
            "AWS_SECRET_ACCESS_KEY": "cliffscope-test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        yield S3Endpoint(url, env)
    finally:
        stop_process_group(proc)
        log.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/moto-api/", timeout=2):
            return True
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@contextlib.contextmanager
def aws_environment(env: dict[str, str]) -> Iterator[None]:
    """Set the AWS variables in this process for the block (boto3 reads them when a client is made)."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
