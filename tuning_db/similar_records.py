"""What the similarity index hands to a search: measured records of workloads like a new one.

A ``SimilarRecord`` is a record of a *neighbouring* workload (same operator family, other
shapes), or of the same workload measured on another machine of the target class, another TVM
version or by another team. It may only *propose* schedules: the warm start re-applies its trace
to the new workload and our own workers measure the result. It is never used to build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tvm.s_tir.meta_schedule.database import TuningRecord

TargetRelation = Literal["same", "class", "other"]
"""How the record's target relates to the one being tuned: the same fingerprint; the same
target class and TVM version (an H100 record for an H200); anything else (another
architecture or TVM version), which may seed a search but never counts as an exact hit."""


@dataclass(frozen=True)
class SimilarRecord:
    record: TuningRecord
    """The record on its own workload (``record.workload.mod`` is the neighbour's module)."""
    workload_key: str
    distance: float
    """0.0 for the same workload; grows with the difference of the shape vectors."""
    target_relation: TargetRelation
    mean_run_sec: float
    verified: bool
    """False while the run time is only a client's claim (an API import)."""
    team_id: int | None
    """The team that imported the record; None for the organisation's own measurements."""
    target_class: str = ""
    """The class of the target the record was measured on (``cuda/sm_80``), for reports."""
