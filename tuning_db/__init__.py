"""tunefarm's tuning database: every measured schedule, shared, keyed by workload and target."""

from tunefarm.tuning_db.engine import DatabaseUrlError, make_engine
from tunefarm.tuning_db.operator_signature import OperatorSignature, operator_signature
from tunefarm.tuning_db.similar_records import SimilarRecord
from tunefarm.tuning_db.sql_database import NearestWorkload, RecordOrigin, SqlDatabase, open_engine
from tunefarm.tuning_db.target_fingerprint import TargetFingerprint, fingerprint, target_class
from tunefarm.tuning_db.workload_key import workload_key

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
