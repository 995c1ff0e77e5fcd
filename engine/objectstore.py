"""An inbox in S3-compatible object storage: ``s3://bucket/prefix``, shared by collectors on many hosts.

A bundle travels as one zip object, ``<prefix>/<run_id>.zip``. S3 has no rename, so a collector uploads under a
temporary key (``<prefix>/.tmp/<run_id>-<random>.zip``) and then copies it to the final key in one server-side
``CopyObject``: a single object appears whole or not at all, so a reader listing the prefix never sees half a
bundle (a directory of several objects could be listed half-copied). The bundle's status rides along as object
metadata (``x-amz-meta-status``), so a sweep can tell which points are complete without downloading them.

The store ingests ``<prefix>/*.zip`` (``ingest_s3_inbox``) and files each one under ``<prefix>/done/`` or
``<prefix>/rejected/`` (with ``<name>.reason.txt``), the bookkeeping of a local inbox.

Endpoint, region and credentials come from boto3's own configuration chain: ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_S3``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, or ``AWS_PROFILE`` and ``~/.aws/config`` (boto3 reads the service-specific endpoint
variables itself since 1.28). boto3 is imported only here and only when an ``s3://`` inbox is used: it belongs to
the ``cluster`` extra, never to the dashboard's base install.
"""

from __future__ import annotations

import tempfile
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

S3_SCHEME = "s3://"
TMP_DIR = ".tmp"
DONE_DIR = "done"
REJECTED_DIR = "rejected"


class ObjectStoreError(RuntimeError):
    """An s3:// inbox that cannot be used; the message names the URL and what to do."""


def is_s3_url(value: str | Path | None) -> bool:
    return isinstance(value, str) and value.startswith(S3_SCHEME)


@dataclass(frozen=True)
class S3Inbox:
    """``s3://bucket/prefix``: where bundles land as ``<prefix>/<run_id>.zip``."""

    bucket: str
    prefix: str  # "" or ending in "/"

    @classmethod
    def parse(cls, url: str) -> S3Inbox:
        if not is_s3_url(url):
            raise ObjectStoreError(f"{url}: an object-storage inbox is written s3://bucket/prefix")
        bucket, _, prefix = url[len(S3_SCHEME) :].partition("/")
        if not bucket:
            raise ObjectStoreError(f"{url}: no bucket name; write s3://bucket/prefix")
        prefix = prefix.strip("/")
        return cls(bucket, prefix + "/" if prefix else "")

    @property
    def url(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}"

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)


def s3_client() -> Any:
    """A boto3 S3 client configured from the usual AWS environment variables or profile."""
    try:
        import boto3
    except ImportError:
        raise ObjectStoreError(
            "an s3:// inbox needs boto3: pip install 'cliffscope[cluster]' (or pip install boto3)"
        ) from None
    return boto3.client("s3")


def zip_bundle(bundle_dir: Path, target: Path) -> Path:
    """Zip a bundle directory as ``<run_id>/<file>`` entries (the layout ``engine.formats.bundles`` reads)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(bundle_dir.iterdir()):
            if path.is_file():
                archive.write(path, f"{bundle_dir.name}/{path.name}")
    return target


def upload_bundle(bundle_dir: Path, inbox: S3Inbox, status: str, client: Any = None) -> str:
    """Upload a finished bundle directory atomically (temporary key, then one CopyObject); returns the final key."""
    client = client or s3_client()
    run_id = bundle_dir.name
    tmp_key = inbox.key(TMP_DIR, f"{run_id}-{uuid.uuid4().hex[:8]}.zip")
    final_key = inbox.key(f"{run_id}.zip")
    with tempfile.TemporaryDirectory(prefix="cliffscope-upload-") as tmp:
        archive = zip_bundle(bundle_dir, Path(tmp) / f"{run_id}.zip")
        try:
            client.upload_file(str(archive), inbox.bucket, tmp_key, ExtraArgs={"Metadata": {"status": status}})
            client.copy_object(
                Bucket=inbox.bucket,
                Key=final_key,
                CopySource={"Bucket": inbox.bucket, "Key": tmp_key},
                MetadataDirective="COPY",
            )
        except Exception as exc:
            raise ObjectStoreError(f"{inbox.url}: upload of {run_id} failed ({type(exc).__name__}: {exc})") from None
        finally:
            _delete_quietly(client, inbox.bucket, tmp_key)
    return final_key


def list_bundles(inbox: S3Inbox, sub: str = "", client: Any = None) -> list[str]:
    """Keys of the ``*.zip`` objects directly under the inbox (or under its ``sub`` folder), sorted."""
    client = client or s3_client()
    prefix = inbox.key(sub + "/") if sub else inbox.prefix
    keys: list[str] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=inbox.bucket, Prefix=prefix, Delimiter="/"):
            keys += [item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(".zip")]
    except Exception as exc:
        raise ObjectStoreError(f"{inbox.url}: cannot list ({type(exc).__name__}: {exc})") from None
    return sorted(keys)


def completed_run_ids(inbox: S3Inbox, client: Any = None) -> set[str]:
    """Run ids whose bundle (waiting in the inbox or filed under done/) says ``complete`` in its metadata."""
    client = client or s3_client()
    done = set()
    for key in [*list_bundles(inbox, client=client), *list_bundles(inbox, DONE_DIR, client=client)]:
        head = client.head_object(Bucket=inbox.bucket, Key=key)
        if head.get("Metadata", {}).get("status") == "complete":
            done.add(key.rsplit("/", 1)[-1].removesuffix(".zip"))
    return done


def ingest_s3_inbox(inbox: S3Inbox, ingest: Callable[[Path, str], Any], client: Any = None) -> list[Any]:
    """Download each waiting bundle, hand it to ``ingest(path, display)`` (the store's ``try_ingest``), then file it
    under done/ or rejected/ (with the reason). A bundle another ingester filed meanwhile is skipped."""
    client = client or s3_client()
    reports = []
    for key in list_bundles(inbox, client=client):
        name = key.rsplit("/", 1)[-1]
        with tempfile.TemporaryDirectory(prefix="cliffscope-s3-") as tmp:
            local = Path(tmp) / name
            try:
                client.download_file(inbox.bucket, key, str(local))
            except Exception as exc:
                if _not_found(exc):
                    continue  # filed by another ingester between the listing and now
                raise ObjectStoreError(f"{inbox.url}: cannot download {name} ({exc})") from None
            report = ingest(local, name)
        target = inbox.key(DONE_DIR if report.ok else REJECTED_DIR, name)
        _move(client, inbox.bucket, key, target)
        if not report.ok:
            client.put_object(Bucket=inbox.bucket, Key=target + ".reason.txt", Body=(str(report.error) + "\n").encode())
        reports.append(report)
    return reports


def _move(client: Any, bucket: str, source: str, target: str) -> None:
    try:
        client.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": source})
    except Exception as exc:
        if _not_found(exc):
            return
        raise
    _delete_quietly(client, bucket, source)


def _delete_quietly(client: Any, bucket: str, key: str) -> None:
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except Exception:
        return


def _not_found(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound")
