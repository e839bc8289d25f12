"""The untuned baseline of a model: measured once per (model, target fingerprint, pipeline).

A compile reports how much faster its library is than the model built without any tuning
record. Timing that untuned build is slow (seconds per call for a large CNN on a CPU), and its
result depends only on the key below, so the first compile measures it and the others read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Engine, select

from tunefarm.tuning_db.schema import Base, UntunedBaselineRow
from tunefarm.tuning_db.upsert import insert_ignoring_duplicates

_baselines = Base.metadata.tables[UntunedBaselineRow.__tablename__]


@dataclass(frozen=True)
class BaselineKey:
    model_sha256: str
    target_key: str
    """The target fingerprint's key (``TargetFingerprint.key``); the target must be filed."""
    pipeline_key: str
    """sha256 of ``pipeline_json`` (see ``UntunedBaselineRow``)."""


@dataclass(frozen=True)
class StoredBaseline:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    samples: int
    calls_per_sample: int
    budget_reached: bool
    measured_on: str
    measured_at: datetime


def find_baseline(engine: Engine, key: BaselineKey) -> StoredBaseline | None:
    """The baseline stored under ``key``, or None."""
    with engine.connect() as connection:
        row = connection.execute(
            select(_baselines).where(
                _baselines.c.model_sha256 == key.model_sha256,
                _baselines.c.target_key == key.target_key,
                _baselines.c.pipeline_key == key.pipeline_key,
            )
        ).first()
    if row is None:
        return None
    measured_at = row.measured_at
    if measured_at.tzinfo is None:  # SQLite gives naive datetimes back; they were stored in UTC
        measured_at = measured_at.replace(tzinfo=timezone.utc)
    return StoredBaseline(
        p50_ms=float(row.p50_ms),
        p90_ms=float(row.p90_ms),
        p99_ms=float(row.p99_ms),
        samples=int(row.samples),
        calls_per_sample=int(row.calls_per_sample),
        budget_reached=bool(row.budget_reached),
        measured_on=str(row.measured_on),
        measured_at=measured_at,
    )


def store_baseline(
    engine: Engine, key: BaselineKey, baseline: StoredBaseline, *, pipeline_json: str
) -> None:
    """Store ``baseline`` under ``key``; a baseline another compile stored first is kept."""
    with engine.begin() as connection:
        insert_ignoring_duplicates(
            connection,
            _baselines,
            {
                "model_sha256": key.model_sha256,
                "target_key": key.target_key,
                "pipeline_key": key.pipeline_key,
                "pipeline_json": pipeline_json,
                "p50_ms": baseline.p50_ms,
                "p90_ms": baseline.p90_ms,
                "p99_ms": baseline.p99_ms,
                "samples": baseline.samples,
                "calls_per_sample": baseline.calls_per_sample,
                "budget_reached": baseline.budget_reached,
                "measured_on": baseline.measured_on,
                "measured_at": baseline.measured_at,
            },
        )
