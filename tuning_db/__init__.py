"""tunefarm's tuning database: every measured schedule, shared, keyed by workload and target."""

from tuning_db.engine import DatabaseUrlError, make_engine
from tuning_db.sql_database import SqlDatabase, open_engine
from tuning_db.target_fingerprint import TargetFingerprint, fingerprint
from tuning_db.workload_key import workload_key

__all__ = [
    "DatabaseUrlError",
    "SqlDatabase",
    "TargetFingerprint",
    "fingerprint",
    "make_engine",
    "open_engine",
    "workload_key",
]
