"""cliffscope's telemetry store: DuckDB schema and migrations, validated ingest, fast queries (the only SQL).

from engine.store import open_store
store = open_store()                       # $CLIFFSCOPE_DB or data/cliffscope.duckdb, seeded from data/runs/
store.ingest("bundle-dir-or-file")         # validates, then one transaction; ValidationError names the fix
store.runs(model="...")                    # polars frames via Arrow
store.timeline(run_id, max_points=1000)    # downsampled in SQL, peaks kept
store.measured_summary(run_id)             # same keys as the engine's predicted summary
"""

from engine.formats.model import Limits, ValidationError
from engine.store.ingest import IngestReport, RunOutcome
from engine.store.queries import REQUEST_METRICS, SUMMARY_KEYS, TIMELINE_SERIES
from engine.store.schema import SCHEMA_VERSION
from engine.store.store import Store, StoreError, default_db_path, default_inbox, open_store

__all__ = [
    "REQUEST_METRICS",
    "SCHEMA_VERSION",
    "SUMMARY_KEYS",
    "TIMELINE_SERIES",
    "IngestReport",
    "Limits",
    "RunOutcome",
    "Store",
    "StoreError",
    "ValidationError",
    "default_db_path",
    "default_inbox",
    "open_store",
]
