"""Where a collector lands its bundles: a directory, or an S3-compatible bucket (``s3://bucket/prefix``).

Either way the job is recorded in a local directory first (``collectors.recorder``: crash-safe work dirs, the
ledger, the finished bundle). For an ``s3://`` inbox that directory is a spool on this host (``$CLIFFSCOPE_SPOOL``,
default ``~/.cache/cliffscope/spool/<bucket>/<prefix>``) and each finished bundle is uploaded atomically
(``engine.objectstore.upload_bundle``) and then removed from the spool; the ledger stays there, so a re-run on the
same host skips what it completed, and the bucket's own listing says the same for every host.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.objectstore import S3Inbox, completed_run_ids, is_s3_url, upload_bundle

SPOOL_ENV = "CLIFFSCOPE_SPOOL"


@dataclass(frozen=True)
class CollectorInbox:
    """A local directory where bundles are written, and the bucket they are published to (if any)."""

    local: Path
    remote: S3Inbox | None = None

    @property
    def display(self) -> str:
        return self.remote.url if self.remote else str(self.local)

    def publish(self, bundle: Path, status: str) -> str:
        """Make a finished bundle visible to the store: nothing to do locally; upload, then drop the spool copy."""
        if self.remote is None:
            return str(bundle)
        key = upload_bundle(bundle, self.remote, status)
        shutil.rmtree(bundle, ignore_errors=True)
        return f"s3://{self.remote.bucket}/{key}"

    def completed_run_ids(self) -> set[str]:
        from collectors.runner import completed_run_ids as local_done

        done = local_done(self.local)
        if self.remote is not None:
            done |= completed_run_ids(self.remote)
        return done


def open_inbox(value: str | Path) -> CollectorInbox:
    """``--inbox`` as given: a directory, or ``s3://bucket/prefix`` (spooled locally, uploaded per bundle)."""
    if not is_s3_url(str(value)):
        return CollectorInbox(Path(value))
    remote = S3Inbox.parse(str(value))
    root = Path(os.environ.get(SPOOL_ENV) or Path.home() / ".cache" / "cliffscope" / "spool").expanduser()
    spool = root / remote.bucket / remote.prefix.strip("/").replace("/", "_")
    spool.mkdir(parents=True, exist_ok=True)
    return CollectorInbox(spool, remote)
