"""The trials of a model's tasks in the order they were filed: the data of a tuning curve."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, or_, select

from tunefarm.tuning_db.schema import TuningRecordRow, WorkloadRow


@dataclass(frozen=True)
class Trial:
    workload_key: str
    run_sec: float | None
    """Mean run time; None for a candidate that failed to build or run."""


def trials_in_order(
    engine: Engine, workload_keys: list[str], target_key: str, *, team_id: int | None = None
) -> list[Trial]:
    """Every measured record of these workloads on ``target_key``, oldest first (a record's id
    grows with each filing). Claims nobody has re-measured yet are left out, and so are the
    records another team imported and did not promote."""
    if not workload_keys:
        return []
    with engine.connect() as connection:
        rows = connection.execute(
            select(WorkloadRow.key, TuningRecordRow.mean_run_sec)
            .join(WorkloadRow, WorkloadRow.id == TuningRecordRow.workload_id)
            .where(
                WorkloadRow.key.in_(workload_keys),
                TuningRecordRow.target_key == target_key,
                TuningRecordRow.verified.is_(True),
                or_(
                    TuningRecordRow.team_id.is_(None),
                    TuningRecordRow.team_id == team_id,
                    TuningRecordRow.shared.is_(True),
                ),
            )
            .order_by(TuningRecordRow.id)
        ).all()
    return [Trial(str(key), float(sec) if sec is not None else None) for key, sec in rows]
