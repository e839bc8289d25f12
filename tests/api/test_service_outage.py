"""Issue 21: while the database is away the API answers 503 with a reason, never 500."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import create_engine


def test_a_request_while_the_database_is_away_is_a_503(client: TestClient) -> None:
    app = client.app
    working = app.state.engine  # type: ignore[attr-defined]
    # Nothing listens on port 1: every query fails as it does while PostgreSQL is down.
    app.state.engine = create_engine(  # type: ignore[attr-defined]
        "postgresql+psycopg://postgres@127.0.0.1:1/test", connect_args={"connect_timeout": 2}
    )
    try:
        token = "tf_" + "a" * 43  # well formed, so the database is asked
        answer = client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 503, answer.text
        message = answer.json()["error"]["message"]
        assert message == "the database is unreachable; try again shortly"
        assert answer.headers["Retry-After"] == "5"
        assert client.get("/healthz").status_code == 503
    finally:
        app.state.engine.dispose()  # type: ignore[attr-defined]
        app.state.engine = working  # type: ignore[attr-defined]
    assert client.get("/healthz").status_code == 200
