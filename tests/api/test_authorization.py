"""Every endpoint x {no token, bad token, another team's token, the owner}: 401/401/404/2xx.

List and create endpoints have no owner to hide: another team gets its own (empty) view, and
the test checks that none of the owner's rows are in it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from tests.api.conftest import TeamAuth, new_team, upload
from tests.api.records_json import matmul_document
from tunefarm.api.services.teams import token_hash
from tunefarm.tuning_db import job_store
from tunefarm.tuning_db.schema import ApiTokenRow, TeamRow


@dataclass
class Owned:
    """Team A's objects."""

    model_id: str
    queued_job: str
    cancel_job: str
    done_job: str
    record_id: int
    """Never promoted: no other team may ever see it."""
    promoted_record_id: int


@pytest.fixture(scope="module")
def owned(client: TestClient, engine: Engine, team_a: TeamAuth, tiny_cnn_path: Path) -> Owned:
    model = upload(client, team_a, tiny_cnn_path)
    jobs = []
    for _ in range(3):
        response = client.post(
            "/v1/jobs",
            json={"model_id": model["id"], "target": "llvm", "trials": 8},
            headers=team_a.headers,
        )
        assert response.status_code == 201, response.text
        jobs.append(response.json()["id"])
    _finish(engine, jobs[2])
    imported = client.post(
        "/v1/records/import", json=matmul_document(factors=(4, 8)), headers=team_a.headers
    )
    assert imported.status_code == 200, imported.text
    first, second = client.get("/v1/records", headers=team_a.headers).json()["items"]
    return Owned(model["id"], jobs[0], jobs[1], jobs[2], first["id"], second["id"])


def _finish(engine: Engine, job_id: str) -> None:
    """Finish the job as a coordinator would, with a small library and manifest."""
    library = b"\x7fELF not really a library"
    assert job_store.claim(engine, job_id, "test-coordinator", lease_sec=60)
    manifest = {
        "library": {"file": "model.so", "sha256": hashlib.sha256(library).hexdigest()},
        "latency": {"tuned": {"p50_ms": 1.0}, "untuned": {"p50_ms": 2.0}},
        "coverage_before_tuning": {"tasks_total": 3, "tasks_covered": 0},
    }
    assert job_store.finish(
        engine, job_id, "test-coordinator", state="succeeded", manifest=manifest, library=library
    )


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    scoped: bool
    """True: the path names one of the owner's objects (another team gets 404)."""
    body: Callable[[Owned, Path], dict[str, Any]] = lambda owned, model: {}


def _json(payload: Callable[[Owned], Any]) -> Callable[[Owned, Path], dict[str, Any]]:
    return lambda owned, _model: {"json": payload(owned)}


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/models",
        False,
        lambda owned, model: {"files": {"file": ("m.onnx", model.read_bytes())}},
    ),
    Endpoint("GET", "/v1/models", False),
    Endpoint("GET", "/v1/models/{model_id}", True),
    Endpoint(
        "POST",
        "/v1/jobs",
        True,  # the body names the owner's model
        _json(lambda owned: {"model_id": owned.model_id, "target": "llvm", "trials": 4}),
    ),
    Endpoint("GET", "/v1/jobs", False),
    Endpoint("GET", "/v1/jobs/{queued_job}", True),
    Endpoint("GET", "/v1/jobs/{done_job}/events", True),
    Endpoint("POST", "/v1/jobs/{cancel_job}/cancel", True),
    Endpoint("GET", "/v1/jobs/{done_job}/artifact", True),
    Endpoint("GET", "/v1/jobs/{done_job}/manifest", True),
    Endpoint("GET", "/v1/records", False),
    Endpoint("GET", "/v1/records/export", False),
    Endpoint("POST", "/v1/records/import", False, _json(lambda owned: matmul_document())),
    Endpoint(
        "POST",
        "/v1/records/promote",
        True,
        _json(lambda owned: {"record_ids": [owned.promoted_record_id]}),
    ),
]

CALLERS = ["no token", "bad token", "other team", "owner"]


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
def test_authorization_matrix(
    client: TestClient,
    owned: Owned,
    team_a: TeamAuth,
    team_b: TeamAuth,
    tiny_cnn_path: Path,
    endpoint: Endpoint,
    caller: str,
) -> None:
    headers = {
        "no token": {},
        "bad token": {"Authorization": "Bearer tf_" + "x" * 43},
        "other team": team_b.headers,
        "owner": team_a.headers,
    }[caller]
    path = endpoint.path.format(**vars(owned))
    response = client.request(
        endpoint.method, path, headers=headers, **endpoint.body(owned, tiny_cnn_path)
    )
    if caller in ("no token", "bad token"):
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    elif caller == "other team" and endpoint.scoped:
        assert response.status_code == 404, response.text
        assert "no " in response.json()["error"]["message"]
    else:
        assert 200 <= response.status_code < 300, response.text
    if caller == "other team" and response.status_code == 200:
        # Nothing of the owner's in another team's view.
        text = response.text
        for value in (owned.model_id, owned.queued_job, owned.cancel_job, owned.done_job):
            assert value not in text
        if endpoint.path == "/v1/records":
            assert owned.record_id not in [r["id"] for r in response.json()["items"]]


def test_lists_have_no_rows_of_another_team(
    client: TestClient, owned: Owned, team_a: TeamAuth, team_b: TeamAuth
) -> None:
    for path in ("/v1/models", "/v1/jobs"):
        mine = client.get(path, headers=team_a.headers).json()["items"]
        theirs = client.get(path, headers=team_b.headers).json()["items"]
        assert mine, path
        assert not {item["id"] for item in mine} & {item["id"] for item in theirs}, path
    records_b = client.get("/v1/records", headers=team_b.headers).json()["items"]
    assert all(record["mine"] or record["shared"] or record["verified"] for record in records_b)
    assert owned.record_id not in [record["id"] for record in records_b]


def test_a_promoted_record_is_seen_by_every_team(
    client: TestClient, owned: Owned, team_a: TeamAuth, engine: Engine
) -> None:
    from tests.api.conftest import new_team

    team_c = new_team(engine, "c")
    response = client.post(
        "/v1/records/promote",
        json={"record_ids": [owned.promoted_record_id]},
        headers=team_a.headers,
    )
    assert response.status_code == 200 and response.json() == {"promoted": 1}
    seen = {r["id"]: r for r in client.get("/v1/records", headers=team_c.headers).json()["items"]}
    assert owned.record_id not in seen
    promoted = seen[owned.promoted_record_id]
    assert promoted["shared"] and not promoted["mine"]
    assert not promoted["verified"]  # still a claim: promoting is not measuring
    assert promoted["run_secs"] is None and promoted["claimed_run_secs"] == [1e-3]


def test_tokens_are_stored_hashed(engine: Engine, team_a: TeamAuth) -> None:
    with engine.connect() as connection:
        stored = (
            connection.execute(
                select(ApiTokenRow.token_sha256)
                .join(TeamRow, TeamRow.id == ApiTokenRow.team_id)
                .where(TeamRow.name == team_a.name)
            )
            .scalars()
            .all()
        )
    assert stored == [token_hash(team_a.token)]
    assert team_a.token not in stored and team_a.token.startswith("tf_")


ADMIN = [sys.executable, "-m", "tunefarm", "admin"]


def test_a_revoked_token_is_refused_within_the_cache_window(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tunefarm admin revoke-token`` (another process, the real database): this API process
    refuses the token once its cache of accepted tokens runs out (issue 21). The window is
    shortened here; the CLI names its real length."""
    from tunefarm.api.services import teams

    monkeypatch.setattr(teams, "AUTHENTICATED_FOR_SEC", 1.0)
    team = new_team(engine, "revoked")
    spare = teams.create_token(engine, team.name)
    assert client.get("/v1/jobs", headers=team.headers).status_code == 200
    revoked = subprocess.run(
        [*ADMIN, "revoke-token", "-", "--db", engine.url.render_as_string(hide_password=False)],
        input=team.token + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked a token of team {team.name}" in revoked.stderr
    assert "up to 10 s" in revoked.stderr
    time.sleep(1.2)
    answer = client.get("/v1/jobs", headers=team.headers)
    assert answer.status_code == 401 and "unknown token" in answer.text
    spare_headers = {"Authorization": f"Bearer {spare}"}
    assert client.get("/v1/jobs", headers=spare_headers).status_code == 200
    # In this process, revoking forgets at once; a second revoke says there is nothing left.
    assert teams.revoke_team_tokens(engine, team.name) == 1
    assert client.get("/v1/jobs", headers=spare_headers).status_code == 401
    again = subprocess.run(
        [*ADMIN, "revoke-token", team.token, "--db", engine.url.render_as_string(False)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 2 and "no team holds that token" in again.stderr
