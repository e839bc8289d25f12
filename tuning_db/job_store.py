"""Jobs in the shared database: creation, the coordinator's lease, progress and the result.

Every write that a coordinator makes names it as ``owner`` and only lands while it still holds
the lease, so a coordinator that was presumed dead cannot overwrite the one that resumed its job.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from tunefarm.tuning_db.job_progress import JobProgress
from tunefarm.tuning_db.job_state import TERMINAL_JOB_STATES, JobState
from tunefarm.tuning_db.schema import JobRow, ModelBlobRow

REQUEUED = "(requeued)"
"""The lease owner of a job that a reaper sent back to the jobs queue."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class JobView:
    id: str
    state: JobState
    model_name: str
    options: dict[str, Any]
    """The job's spec as stored (``tuner.job_spec.JobSpec.from_row`` reads it)."""
    progress: JobProgress
    error: str | None
    error_kind: str | None
    cancel_requested: bool
    lease_owner: str | None
    attempts: int
    manifest: dict[str, Any] | None
    team_id: int | None = None
    """The team that submitted it through the API; None for the CLI's jobs."""
    model_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state.finished


JOB_VIEW_COLUMNS = [c for c in JobRow.__table__.c if c.name not in ("model_onnx", "library")]
"""Every column of ``jobs`` but the model and the library, which can be large."""


def store_model_blob(engine: Engine, sha256: str, read: Callable[[], bytes]) -> None:
    """Make sure ``model_blobs`` holds the model of ``sha256``; ``read`` gives its bytes, and is
    called only when it does not (one indexed lookup otherwise)."""
    with engine.connect() as connection:
        if connection.execute(
            select(ModelBlobRow.sha256).where(ModelBlobRow.sha256 == sha256)
        ).first():
            return
    data = read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"the model's bytes do not have the sha256 {sha256}")
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(ModelBlobRow).values(sha256=sha256, onnx=data, created_at=_now())
            )
    except IntegrityError:
        pass  # stored at the same moment by another submit: the same bytes


def create_job(
    engine: Engine,
    *,
    model_name: str,
    model_sha256: str,
    options: dict[str, Any],
    team_id: int | None = None,
    model_id: str | None = None,
) -> JobView:
    """A queued job of the model ``store_model_blob`` stored; the new row as it was stored (one
    round trip: the API's submit answers with it without reading the row back)."""
    job_id = uuid.uuid4().hex
    with engine.begin() as connection:
        row = connection.execute(
            insert(JobRow)
            .values(
                id=job_id,
                state=JobState.QUEUED.value,
                model_name=model_name,
                model_sha256=model_sha256,
                options_json=json.dumps(options),
                progress_json="{}",
                cancel_requested=False,
                attempts=0,
                created_at=_now(),
                updated_at=_now(),
                team_id=team_id,
                model_id=model_id,
            )
            .returning(*JOB_VIEW_COLUMNS)
        ).one()
    return job_view(row)


def get_job(engine: Engine, job_id: str) -> JobView | None:
    with engine.connect() as connection:
        row = connection.execute(select(*JOB_VIEW_COLUMNS).where(JobRow.id == job_id)).first()
    if row is None:
        return None
    return job_view(row)


def job_view(row: Any) -> JobView:
    """A ``JobView`` of a row of ``jobs`` (any select of its columns but the two blobs)."""
    return JobView(
        id=row.id,
        state=JobState(row.state),
        model_name=row.model_name,
        options=json.loads(row.options_json),
        progress=JobProgress.model_validate_json(row.progress_json or "{}"),
        error=row.error,
        error_kind=row.error_kind,
        cancel_requested=bool(row.cancel_requested),
        lease_owner=row.lease_owner,
        attempts=int(row.attempts),
        manifest=json.loads(row.manifest_json) if row.manifest_json else None,
        team_id=row.team_id,
        model_id=row.model_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


def list_jobs(engine: Engine, *, limit: int = 50) -> list[JobView]:
    with engine.connect() as connection:
        ids = connection.execute(
            select(JobRow.id).order_by(JobRow.created_at.desc()).limit(limit)
        ).scalars()
        job_ids = list(ids)
    return [job for job in (get_job(engine, job_id) for job_id in job_ids) if job is not None]


def read_model(engine: Engine, job_id: str) -> bytes:
    with engine.connect() as connection:
        own, stored = connection.execute(
            select(JobRow.model_onnx, ModelBlobRow.onnx)
            .outerjoin(ModelBlobRow, ModelBlobRow.sha256 == JobRow.model_sha256)
            .where(JobRow.id == job_id)
        ).one()
    data = own if own is not None else stored
    if data is None:
        raise LookupError(f"job {job_id}: its model is in no model_blobs row")
    return bytes(data)


def read_library(engine: Engine, job_id: str) -> bytes | None:
    with engine.connect() as connection:
        data = connection.execute(select(JobRow.library).where(JobRow.id == job_id)).scalar()
    return bytes(data) if data is not None else None


def claim(engine: Engine, job_id: str, owner: str, *, lease_sec: float) -> bool:
    """Take the job if it is not finished and nobody holds a live lease on it."""
    now = _now()
    with engine.begin() as connection:
        claimed = connection.execute(
            update(JobRow)
            .where(
                JobRow.id == job_id,
                JobRow.state.not_in(TERMINAL_JOB_STATES),
                or_(
                    JobRow.lease_owner.is_(None),
                    JobRow.lease_owner == REQUEUED,
                    JobRow.lease_expires_at < now,
                ),
            )
            .values(
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_sec),
                attempts=JobRow.attempts + 1,
                updated_at=now,
            )
        ).rowcount
    return claimed == 1


def renew(engine: Engine, job_id: str, owner: str, *, lease_sec: float) -> bool | None:
    """Extend the lease. Returns whether a cancel was requested, or None if the lease is lost."""
    now = _now()
    with engine.begin() as connection:
        updated = connection.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.lease_owner == owner)
            .values(lease_expires_at=now + timedelta(seconds=lease_sec))
        ).rowcount
        if updated != 1:
            return None
        return bool(
            connection.execute(
                select(JobRow.cancel_requested).where(JobRow.id == job_id)
            ).scalar_one()
        )


def update_job(engine: Engine, job_id: str, owner: str, **values: Any) -> bool:
    """Set columns (``state``, ``progress``...) while ``owner`` holds the lease."""
    if "progress" in values:
        values["progress_json"] = values.pop("progress").model_dump_json(exclude_none=True)
    if isinstance(values.get("state"), JobState):
        values["state"] = values["state"].value
    values["updated_at"] = _now()
    with engine.begin() as connection:
        updated = connection.execute(
            update(JobRow).where(JobRow.id == job_id, JobRow.lease_owner == owner).values(**values)
        ).rowcount
    return updated == 1


def finish(
    engine: Engine,
    job_id: str,
    owner: str,
    *,
    state: JobState | str,
    error: str | None = None,
    error_kind: str | None = None,
    manifest: dict[str, Any] | None = None,
    library: bytes | None = None,
) -> bool:
    state = JobState(state)
    if not state.finished:
        raise ValueError(f"{state!r} is not a final state")
    return update_job(
        engine,
        job_id,
        owner,
        state=state,
        error=error,
        error_kind=error_kind,
        manifest_json=json.dumps(manifest) if manifest is not None else None,
        library=library,
        finished_at=_now(),
        lease_owner=None,
        lease_expires_at=None,
    )


def fail_unclaimed(engine: Engine, job_id: str, *, error: str) -> bool:
    """End a job that no coordinator holds, with ``error``; a running job is left alone."""
    now = _now()
    with engine.begin() as connection:
        updated = connection.execute(
            update(JobRow)
            .where(
                JobRow.id == job_id,
                JobRow.state.not_in(TERMINAL_JOB_STATES),
                or_(JobRow.lease_owner.is_(None), JobRow.lease_expires_at < now),
            )
            .values(
                state=JobState.FAILED.value,
                error=error,
                error_kind="internal",
                finished_at=now,
                updated_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
        ).rowcount
    return updated == 1


def request_cancel(engine: Engine, job_id: str) -> JobView | None:
    """Ask the job to stop; a job no coordinator has taken yet is cancelled at once."""
    now = _now()
    with engine.begin() as connection:
        connection.execute(
            update(JobRow)
            .where(
                JobRow.id == job_id,
                JobRow.state == JobState.QUEUED.value,
                JobRow.lease_owner.is_(None),
            )
            .values(
                state=JobState.CANCELLED.value,
                finished_at=now,
                updated_at=now,
                cancel_requested=True,
            )
        )
        connection.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.state.not_in(TERMINAL_JOB_STATES))
            .values(cancel_requested=True, updated_at=now)
        )
    return get_job(engine, job_id)


def abandoned_jobs(engine: Engine, *, unclaimed_after_sec: float | None = None) -> list[str]:
    """Running jobs whose coordinator stopped renewing its lease; with ``unclaimed_after_sec``,
    also jobs whose queue message may be gone: requeued ones not claimed within their hold,
    and queued ones never claimed that long after their submit (a Redis restarted without
    its data loses the jobs queue; the rows are the truth)."""
    now = _now()
    dead_coordinator = and_(
        JobRow.lease_owner.is_not(None),
        JobRow.lease_owner != REQUEUED,
        JobRow.lease_expires_at < now,
    )
    condition = dead_coordinator
    if unclaimed_after_sec is not None:
        condition = or_(
            dead_coordinator,
            and_(JobRow.lease_owner == REQUEUED, JobRow.lease_expires_at < now),
            and_(
                JobRow.lease_owner.is_(None),
                JobRow.created_at < now - timedelta(seconds=unclaimed_after_sec),
            ),
        )
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(JobRow.id).where(JobRow.state.not_in(TERMINAL_JOB_STATES), condition)
            ).scalars()
        )


def mark_requeued(engine: Engine, job_id: str, *, hold_sec: float) -> bool:
    """Atomically take an abandoned job for requeueing, so only one reaper sends it again."""
    now = _now()
    with engine.begin() as connection:
        updated = connection.execute(
            update(JobRow)
            .where(
                JobRow.id == job_id,
                JobRow.state.not_in(TERMINAL_JOB_STATES),
                or_(JobRow.lease_expires_at.is_(None), JobRow.lease_expires_at < now),
            )
            .values(lease_owner=REQUEUED, lease_expires_at=now + timedelta(seconds=hold_sec))
        ).rowcount
    return updated == 1
