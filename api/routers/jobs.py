"""/v1/jobs: submit, follow (status, Server-Sent Events), cancel, download the results."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import HTMLResponse, StreamingResponse

from tunefarm.api.dependencies import CeleryDep, CurrentTeam, EngineDep, SettingsDep
from tunefarm.api.responses import event_stream, library_download
from tunefarm.api.schemas import JobList, JobState, JobStatus, JobSubmit
from tunefarm.api.services import jobs

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=201, response_model=JobStatus)
def submit_job(
    body: JobSubmit, team: CurrentTeam, engine: EngineDep, celery: CeleryDep, settings: SettingsDep
) -> JobStatus:
    """Queue a tuning job for an uploaded model."""
    return jobs.submit(engine, celery, settings, team, body)


@router.get("", response_model=JobList)
def list_jobs(
    team: CurrentTeam,
    engine: EngineDep,
    state: JobState | None = None,
    model_id: Annotated[str | None, Query(pattern="^[0-9a-f]{32}$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JobList:
    """The team's jobs, newest first; ``next_offset`` pages on."""
    return jobs.list_jobs(engine, team, state=state, model_id=model_id, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobStatus)
def job_status(
    job_id: str, team: CurrentTeam, engine: EngineDep, settings: SettingsDep
) -> JobStatus:
    """State, per-task progress, coverage, the best latency so far, and errors."""
    return jobs.status(engine, settings, team, job_id)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "progress events"}},
)
def job_events(
    job_id: str, team: CurrentTeam, engine: EngineDep, settings: SettingsDep
) -> StreamingResponse:
    """Server-Sent Events: ``progress`` on every change, then ``end`` with the final status."""
    jobs.own_job_exists(engine, team, job_id)
    return event_stream(jobs.events(engine, settings, team, job_id))


@router.post("/{job_id}/cancel", response_model=JobStatus)
def cancel_job(
    job_id: str, team: CurrentTeam, engine: EngineDep, settings: SettingsDep
) -> JobStatus:
    """Stop the job: no new trials after the batch in flight."""
    return jobs.cancel(engine, settings, team, job_id)


@router.get(
    "/{job_id}/artifact",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "model.so"}},
)
def job_artifact(job_id: str, team: CurrentTeam, engine: EngineDep) -> Response:
    """The compiled library; its sha256 is in the ``X-Content-SHA256`` header and the manifest."""
    return library_download(*jobs.artifact(engine, team, job_id))


@router.get(
    "/{job_id}/report",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "report.html"}},
)
def job_report(job_id: str, team: CurrentTeam, engine: EngineDep) -> HTMLResponse:
    """The library's report: latency over trials, per-task curves, coverage (self-contained)."""
    return HTMLResponse(jobs.report(engine, team, job_id))


@router.get("/{job_id}/manifest", response_model=dict[str, Any])
def job_manifest(job_id: str, team: CurrentTeam, engine: EngineDep) -> dict[str, Any]:
    """The manifest: target, signature, the library's sha256 and the latency report."""
    return jobs.manifest(engine, team, job_id)
