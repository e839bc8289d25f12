"""The API in-process on the machine's PostgreSQL and Redis, with two teams.

A Redis database of its own (12; the farm tests use 11), so that runs do not collide.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.conftest import _reset_postgres
from tests.farm_processes import empty_redis
from tunefarm.api.app import create_app
from tunefarm.api.services.teams import create_team
from tunefarm.tuner.settings import Settings

API_REDIS_URL = os.environ.get("TUNEFARM_TEST_API_REDIS_URL", "redis://127.0.0.1:6379/12")
UPLOAD_LIMIT = 4 * 1024**2


@dataclass(frozen=True)
class TeamAuth:
    name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def api_settings(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    _reset_postgres(postgres_url)
    return Settings(
        database_url=postgres_url,
        broker_url=empty_redis(API_REDIS_URL),
        data_dir=tmp_path_factory.mktemp("api-data"),
        api_max_upload_bytes=UPLOAD_LIMIT,
        api_events_poll_sec=0.1,
    )


@pytest.fixture(scope="module")
def client(api_settings: Settings) -> Iterator[TestClient]:
    # raise_server_exceptions=False: a 500 must show up as an answer the tests can see.
    with TestClient(create_app(api_settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def engine(client: TestClient) -> Engine:
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    return engine


def new_team(engine: Engine, prefix: str) -> TeamAuth:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _team, token = create_team(engine, name)
    return TeamAuth(name=name, token=token)


@pytest.fixture(scope="module")
def team_a(engine: Engine) -> TeamAuth:
    return new_team(engine, "a")


@pytest.fixture(scope="module")
def team_b(engine: Engine) -> TeamAuth:
    return new_team(engine, "b")


def upload(client: TestClient, team: TeamAuth, path: Path, name: str | None = None) -> dict:  # type: ignore[type-arg]
    with path.open("rb") as stream:
        response = client.post(
            "/v1/models", files={"file": (name or path.name, stream)}, headers=team.headers
        )
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


def coverage_of(
    client: TestClient | httpx.Client,
    model_id: str,
    target: str,
    headers: dict[str, str] | None = None,
    *,
    layout: str = "auto",
    timeout_sec: float = 180.0,
) -> dict[str, Any]:
    """``GET /v1/models/{id}?target=`` until its coverage is ready (issue 21: the model's tasks
    are found in a child process; until then the answer says "pending")."""
    deadline = time.monotonic() + timeout_sec
    while True:
        response = client.get(
            f"/v1/models/{model_id}",
            params={"target": target, "layout": layout},
            headers=headers or {},
        )
        assert response.status_code == 200, response.text
        detail: dict[str, Any] = response.json()
        if detail["coverage_state"] == "ready":
            assert detail["coverage"] is not None
            return detail
        assert detail["coverage_state"] == "pending" and detail["coverage"] is None
        assert time.monotonic() < deadline, "the coverage stayed pending"
        time.sleep(0.2)


# The farm (a real server and workers) for the modules that ask for it; defined beside it.
from tests.api.farm_fixture import farm  # noqa: E402, F401
