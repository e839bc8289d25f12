"""The web dashboard at ``/``: sign-in, jobs, a live job page, records and workers (issue 20).

Pages are rendered on the server with Jinja2 (autoescaped: every name comes from a user's
model); the job page's script draws its curves with the vendored uPlot
(``api/static/vendor/uplot``) and follows the job's event stream. Nothing is fetched from
outside the server. The pages read the same services as ``/v1``; the session is a cookie
(``dashboard_session``), and every form that changes something carries a CSRF token.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates

from tunefarm.api.dashboard_session import (
    SignInRequired,
    check_csrf,
    csrf_token,
    end_session,
    session_team,
    start_session,
)
from tunefarm.api.dependencies import EngineDep, SettingsDep
from tunefarm.api.errors import ApiError, Unauthorized
from tunefarm.api.responses import event_stream, library_download
from tunefarm.api.schemas import JobState
from tunefarm.api.services import jobs, records
from tunefarm.api.services.job_page import job_page
from tunefarm.api.services.records import Scope
from tunefarm.api.services.teams import Team, authenticate
from tunefarm.workers.worker_registry import live_workers

router = APIRouter(include_in_schema=False)
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# autoescape for every template: Starlette's default escapes only *.html, and ours are *.html.j2
# (a model input named <script> rendered as markup before this).
templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
        autoescape=True,
    )
)
PAGE_SIZE = 25


def _render(
    request: Request, name: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _page(request: Request, team: Team, token: str, **context: Any) -> dict[str, Any]:
    return {"team": team, "csrf": csrf_token(token), "path": request.url.path, **context}


def _error_page(request: Request, team: Team, token: str, err: ApiError) -> HTMLResponse:
    return _render(
        request,
        "error.html.j2",
        _page(request, team, token, message=err.message, code=err.status_code),
        status_code=err.status_code,
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _render(request, "login.html.j2", {"error": None})


@router.post("/login", response_model=None)
def login(
    request: Request, engine: EngineDep, token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    try:
        authenticate(engine, token.strip())
    except Unauthorized as err:
        return _render(request, "login.html.j2", {"error": err.message}, status_code=401)
    response = RedirectResponse("/", status_code=303)
    start_session(request, response, token.strip())
    return response


@router.post("/logout", response_model=None)
def logout(
    request: Request, engine: EngineDep, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    _team, token = session_team(request, engine)
    check_csrf(request, token, csrf)
    response = RedirectResponse("/login", status_code=303)
    end_session(response)
    return response


@router.get("/", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    engine: EngineDep,
    state: JobState | None = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> HTMLResponse:
    team, token = session_team(request, engine)
    listed = jobs.list_jobs(
        engine, team, state=state, model_id=None, limit=PAGE_SIZE, offset=offset
    )
    return _render(
        request,
        "jobs.html.j2",
        _page(
            request,
            team,
            token,
            jobs=listed.items,
            next_offset=listed.next_offset,
            previous_offset=max(offset - PAGE_SIZE, 0) if offset else None,
            state=state.value if state else "",
            states=[s.value for s in JobState],
            now=time.time(),
        ),
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_detail(
    request: Request, job_id: str, engine: EngineDep, settings: SettingsDep
) -> HTMLResponse:
    team, token = session_team(request, engine)
    try:
        status = jobs.status(engine, settings, team, job_id)
        succeeded = status.state is JobState.SUCCEEDED
        manifest = jobs.manifest(engine, team, job_id) if succeeded else None
    except ApiError as err:
        return _error_page(request, team, token, err)
    page = job_page(engine, team, status, manifest)
    return _render(request, "job.html.j2", _page(request, team, token, page=page))


@router.get("/jobs/{job_id}/events", response_model=None)
def job_events(
    request: Request, job_id: str, engine: EngineDep, settings: SettingsDep
) -> StreamingResponse:
    team, _token = session_team(request, engine)
    jobs.own_job_exists(engine, team, job_id)
    return event_stream(jobs.events(engine, settings, team, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=None)
def cancel(
    request: Request,
    job_id: str,
    engine: EngineDep,
    settings: SettingsDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    team, token = session_team(request, engine)
    check_csrf(request, token, csrf)
    try:
        jobs.cancel(engine, settings, team, job_id)
    except ApiError as err:
        return _error_page(request, team, token, err)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.get("/jobs/{job_id}/artifact", response_model=None)
def artifact(request: Request, job_id: str, engine: EngineDep) -> Response:
    team, token = session_team(request, engine)
    try:
        library, sha256 = jobs.artifact(engine, team, job_id)
    except ApiError as err:
        return _error_page(request, team, token, err)
    return library_download(library, sha256)


@router.get("/jobs/{job_id}/report", response_class=HTMLResponse)
def report(request: Request, job_id: str, engine: EngineDep) -> HTMLResponse:
    team, token = session_team(request, engine)
    try:
        return HTMLResponse(jobs.report(engine, team, job_id))
    except ApiError as err:
        return _error_page(request, team, token, err)


@router.get("/records", response_class=HTMLResponse)
def records_page(
    request: Request,
    engine: EngineDep,
    operator: Annotated[str, Query(pattern="^[A-Za-z0-9_.]{0,100}$")] = "",
    target_class: Annotated[str, Query(max_length=255)] = "",
    scope: Scope = "all",
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    promoted: Annotated[int | None, Query(ge=0)] = None,
) -> HTMLResponse:
    team, token = session_team(request, engine)
    rows = records.browse(
        engine,
        team,
        operator=operator or None,
        target_class=target_class or None,
        scope=scope,
        limit=PAGE_SIZE + 1,
        offset=offset,
    )
    return _render(
        request,
        "records.html.j2",
        _page(
            request,
            team,
            token,
            records=rows[:PAGE_SIZE],
            next_offset=offset + PAGE_SIZE if len(rows) > PAGE_SIZE else None,
            previous_offset=max(offset - PAGE_SIZE, 0) if offset else None,
            operator=operator,
            target_class=target_class,
            scope=scope,
            scopes=["all", "mine", "promoted", "organisation"],
            promoted=promoted,
        ),
    )


@router.post("/records/promote", response_model=None)
def promote(
    request: Request,
    engine: EngineDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
    record_id: Annotated[list[int] | None, Form()] = None,
) -> Response:
    team, token = session_team(request, engine)
    check_csrf(request, token, csrf)
    if not record_id:
        return RedirectResponse("/records?promoted=0", status_code=303)
    try:
        count = records.promote(engine, team, record_id[:10_000])
    except ApiError as err:
        return _error_page(request, team, token, err)
    return RedirectResponse(f"/records?promoted={count}", status_code=303)


@router.get("/workers", response_class=HTMLResponse)
def workers_page(request: Request, engine: EngineDep, settings: SettingsDep) -> HTMLResponse:
    team, token = session_team(request, engine)
    try:
        workers = live_workers(settings.broker_url)
        unreachable = None
    except Exception as err:  # the broker is away: the page says so
        workers, unreachable = [], (str(err).splitlines() or [type(err).__name__])[0][:200]
    queues: dict[str, list[Any]] = {}
    for worker in workers:
        queues.setdefault(worker.queue, []).append(worker)
    return _render(
        request,
        "workers.html.j2",
        _page(request, team, token, queues=queues, unreachable=unreachable, now=time.time()),
    )


def sign_in_redirect(request: Request, err: SignInRequired) -> Response:
    """Pages answer a missing or revoked session with the sign-in page."""
    if request.url.path.endswith("/events"):
        return Response(err.message, status_code=401)
    return RedirectResponse("/login", status_code=303)
