"""/healthz: for container health checks and load balancers; no token needed."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from tunefarm.api.dependencies import EngineDep
from tunefarm.api.errors import ServiceUnavailable

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
def healthz(engine: EngineDep) -> dict[str, str]:
    """Answers 200 while the API can reach its database."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        raise ServiceUnavailable("the database is unreachable") from err
    return {"status": "ok"}
