"""tunefarm's tuning database: every measured schedule, shared, keyed by workload and target."""

from tuning_db.engine import DatabaseUrlError, make_engine
from tuning_db.operator_signature import OperatorSignature, operator_signature
from tuning_db.similar_records import SimilarRecord
from tuning_db.sql_database import NearestWorkload, RecordOrigin, SqlDatabase, open_engine
from tuning_db.target_fingerprint import TargetFingerprint, fingerprint, target_class
from tuning_db.workload_key import workload_key

__all__ = [
    "DatabaseUrlError",
    "NearestWorkload",
    "OperatorSignature",
    "RecordOrigin",
    "SimilarRecord",
    "SqlDatabase",
    "TargetFingerprint",
    "fingerprint",
    "make_engine",
    "open_engine",
    "operator_signature",
    "target_class",
    "workload_key",
]
