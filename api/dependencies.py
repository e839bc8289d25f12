"""What the routers get injected, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from tunefarm.api.services.teams import Team, authenticate
from tunefarm.tuner.settings import Settings


# Plain lookups are ``async def``: FastAPI runs a sync dependency in its thread pool, a thread
# hop per request that costs more than the lookup.
async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def _celery(request: Request) -> Celery:
    celery: Celery = request.app.state.celery
    return celery


SettingsDep = Annotated[Settings, Depends(_settings)]
EngineDep = Annotated[Engine, Depends(_engine)]
CeleryDep = Annotated[Celery, Depends(_celery)]

# auto_error=False: a missing or malformed header is answered by ``authenticate`` as a 401 with
# our error body, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="A team token: `tunefarm admin create-token`")


def _current_team(
    engine: EngineDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Team:
    return authenticate(engine, credentials.credentials if credentials else None)


CurrentTeam = Annotated[Team, Depends(_current_team)]
