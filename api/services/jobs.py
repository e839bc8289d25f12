"""Jobs submitted through the API: queued for the farm's coordinators, followed, downloaded."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from celery import Celery
from pydantic import ValidationError
from sqlalchemy import Engine, select

from tunefarm.api.errors import Conflict, NotFound, ServiceUnavailable
from tunefarm.api.schemas import (
    Coverage,
    JobError,
    JobList,
    JobStatus,
    JobSubmit,
    JobSummary,
    TaskProgress,
)
from tunefarm.api.services import models
from tunefarm.api.services.coverage import AnalysisPending
from tunefarm.api.services.models import is_object_id
from tunefarm.api.services.teams import Team
from tunefarm.tuner.job_spec import JobSpec
from tunefarm.tuner.settings import Settings
from tunefarm.tuning_db import job_store
from tunefarm.tuning_db.job_progress import PlanCoverage
from tunefarm.tuning_db.job_state import JobState
from tunefarm.tuning_db.job_store import JOB_VIEW_COLUMNS, JobView, job_view
from tunefarm.tuning_db.schema import JobRow
from tunefarm.workers.job_tasks import submit_job

logger = logging.getLogger(__name__)

COVERAGE_MAX_AGE_SEC = 2.0
"""A running job's coverage may be this old: its status is polled many times a second by many
clients, and coverage changes at the pace of tuning."""


def submit(
    engine: Engine, celery: Celery, settings: Settings, team: Team, request: JobSubmit
) -> JobStatus:
    model = models.find_model(engine, team, request.model_id)
    spec = JobSpec.model_validate(request.model_dump(exclude={"model_id"}))
    models.store_model_blob(engine, settings, model)
    job = job_store.create_job(
        engine,
        model_name=model.name,
        model_sha256=model.sha256,
        options=spec.model_dump(mode="json"),
        team_id=team.id,
        model_id=model.id,
    )
    try:
        submit_job(job.id, celery=celery)
    except Exception as err:
        # The row must not sit queued with nobody to run it.
        logger.exception("could not queue job %s", job.id)
        job_store.fail_unclaimed(engine, job.id, error=f"the broker refused the job: {err}")
        raise ServiceUnavailable(
            "the job could not be queued: the broker is unreachable; try again"
        ) from err
    # As stored: a coordinator may have taken it since, which its next status shows.
    return _status(engine, settings, team, job, with_coverage=False)


def status(
    engine: Engine, settings: Settings, team: Team, job_id: str, *, with_coverage: bool = True
) -> JobStatus:
    job = _own_job(engine, team, job_id)
    return _status(engine, settings, team, job, with_coverage=with_coverage)


def list_jobs(
    engine: Engine,
    team: Team,
    *,
    state: JobState | None,
    model_id: str | None,
    limit: int,
    offset: int,
) -> JobList:
    query = select(*JOB_VIEW_COLUMNS).where(JobRow.team_id == team.id)
    if state is not None:
        query = query.where(JobRow.state == state.value)
    if model_id is not None:
        query = query.where(JobRow.model_id == model_id)
    query = query.order_by(JobRow.created_at.desc(), JobRow.id).limit(limit + 1).offset(offset)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    items = [_summary(job_view(row)) for row in rows[:limit]]
    return JobList(items=items, next_offset=offset + limit if len(rows) > limit else None)


def cancel(engine: Engine, settings: Settings, team: Team, job_id: str) -> JobStatus:
    _own_job(engine, team, job_id)
    job = job_store.request_cancel(engine, job_id)
    assert job is not None
    return _status(engine, settings, team, job, with_coverage=False)


def artifact(engine: Engine, team: Team, job_id: str) -> tuple[bytes, str]:
    """The library and its sha256."""
    job = _finished_job(engine, team, job_id)
    library = job_store.read_library(engine, job_id)
    if library is None or job.manifest is None:
        raise Conflict(f"job {job_id} has no library")
    return library, str(job.manifest["library"]["sha256"])


def manifest(engine: Engine, team: Team, job_id: str) -> dict[str, Any]:
    job = _finished_job(engine, team, job_id)
    assert job.manifest is not None
    return job.manifest


def report(engine: Engine, team: Team, job_id: str) -> str:
    """The job's ``report.html``, drawn from its manifest and the trials the team may see."""
    from tunefarm.tuner.html_report import render_report, report_trials

    job_manifest = manifest(engine, team, job_id)
    return render_report(job_manifest, report_trials(job_manifest, engine, team_id=team.id))


async def events(engine: Engine, settings: Settings, team: Team, job_id: str) -> AsyncIterator[str]:
    """Server-Sent Events: ``progress`` whenever the job changes, ``end`` when it is over."""
    last = None
    while True:
        job = await anyio.to_thread.run_sync(job_store.get_job, engine, job_id)
        if job is None or job.team_id != team.id:  # deleted under us
            return
        snapshot = _status(engine, settings, team, job, with_coverage=False)
        data = snapshot.model_dump_json(exclude={"coverage"})
        if data != last:
            last = data
            yield f"event: progress\ndata: {data}\n\n"
        if job.finished:
            # The last word is the whole status, coverage included, as GET /v1/jobs/{id} has it.
            final = await anyio.to_thread.run_sync(
                lambda: status(engine, settings, team, job_id, with_coverage=True)
            )
            yield f"event: end\ndata: {final.model_dump_json()}\n\n"
            return
        await anyio.sleep(settings.api_events_poll_sec)


def own_job_exists(engine: Engine, team: Team, job_id: str) -> None:
    _own_job(engine, team, job_id)


def _own_job(engine: Engine, team: Team, job_id: str) -> JobView:
    job = job_store.get_job(engine, job_id) if is_object_id(job_id) else None
    # Another team's job is answered like a missing one: ids are not for probing.
    if job is None or job.team_id != team.id:
        raise NotFound(f"no job {job_id}")
    return job


def _finished_job(engine: Engine, team: Team, job_id: str) -> JobView:
    job = _own_job(engine, team, job_id)
    if job.state != "succeeded":
        raise Conflict(
            f"job {job_id} is {job.state}; it has a library and a manifest once it has succeeded"
        )
    return job


def _status(
    engine: Engine, settings: Settings, team: Team, job: JobView, *, with_coverage: bool
) -> JobStatus:
    progress = job.progress
    spec = JobSpec.from_row(job.options)
    tasks = [
        TaskProgress(
            name=name,
            trials=task.trials,
            failures=task.failures,
            best_latency_us=task.best_us,
        )
        for name, task in progress.tasks.items()
    ]
    best_us = progress.best_us_sum
    manifest = job.manifest
    return JobStatus(
        id=job.id,
        state=job.state,
        model_id=job.model_id,
        model_name=job.model_name,
        target=spec.target,
        trials=spec.trials,
        options=spec.options,
        trials_done=progress.trials,
        trials_total=progress.trials_total,
        message=progress.message,
        tasks=tasks,
        coverage=_coverage(engine, settings, team, job, spec) if with_coverage else None,
        estimated_latency_ms=_ms(best_us),
        best_latency_ms=manifest["latency"]["tuned"]["p50_ms"] if manifest else None,
        error=JobError(kind=job.error_kind, message=job.error) if job.error else None,
        cancel_requested=job.cancel_requested,
        created_at=job.created_at,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
    )


def _coverage(
    engine: Engine, settings: Settings, team: Team, job: JobView, spec: JobSpec
) -> PlanCoverage | Coverage | None:
    if job.manifest is not None:
        try:
            return PlanCoverage.model_validate(job.manifest["coverage_before_tuning"])
        except (KeyError, ValidationError):
            logger.warning("job %s: its manifest's coverage is not a plan", job.id)
    if job.progress.coverage is not None:
        # The job's own plan, written by its coordinator before the first trial.
        return job.progress.coverage
    if job.model_id is None or job.finished:
        return None
    try:
        model = models.find_model(engine, team, job.model_id)
        coverage = models.model_coverage(
            engine,
            settings,
            models.model_file(settings, model.sha256),
            spec.target,
            layout=spec.options.layout,
            fp16=spec.options.fp16,
            max_age_sec=COVERAGE_MAX_AGE_SEC,
        )
    except AnalysisPending:
        return None  # the next status has it
    except Exception:  # coverage is a courtesy: a status must answer without it
        logger.warning("no coverage for job %s", job.id, exc_info=True)
        return None
    # Its tasks are the status's own ``tasks``; a status polled many times a second stays small.
    return coverage.model_copy(update={"tasks": []})


def _summary(job: JobView) -> JobSummary:
    spec = JobSpec.from_row(job.options)
    return JobSummary(
        id=job.id,
        state=job.state,
        model_id=job.model_id,
        model_name=job.model_name,
        target=spec.target,
        trials=spec.trials,
        trials_done=job.progress.trials,
        trials_total=job.progress.trials_total,
        estimated_latency_ms=_ms(job.progress.best_us_sum),
        created_at=job.created_at,
        error=job.error,
    )


def _ms(us: float | None) -> float | None:
    return round(us / 1000, 6) if us is not None else None
