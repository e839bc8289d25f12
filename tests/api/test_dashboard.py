"""The dashboard's pages in-process (issue 20): sign-in, CSRF, teams kept apart, names escaped.

The browser tests (``test_dashboard_browser.py``) drive the same pages in Chromium against a
real server and farm; these check what a browser hides: status codes, cookies, headers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import TeamAuth, upload
from tunefarm.api.dashboard_session import COOKIE, csrf_token


def _signed_in(client: TestClient, team: TeamAuth) -> None:
    client.cookies.clear()
    response = client.post("/login", data={"token": team.token}, follow_redirects=False)
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie, cookie
    client.cookies.set(COOKIE, team.token)


def _job(client: TestClient, team: TeamAuth, model_path: Path, name: str) -> str:
    model = upload(client, team, model_path, name=name)
    response = client.post(
        "/v1/jobs",
        json={"model_id": model["id"], "target": "llvm", "trials": 8},
        headers=team.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_pages_need_a_session_and_a_bad_token_is_refused(
    client: TestClient, team_a: TeamAuth
) -> None:
    client.cookies.clear()
    for path in ("/", "/records", "/workers", "/jobs/0123456789abcdef0123456789abcdef"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login", path
    refused = client.post("/login", data={"token": "tf_" + "x" * 43})
    assert refused.status_code == 401
    assert "unknown" in refused.text or "revoked" in refused.text or "token" in refused.text
    assert "set-cookie" not in refused.headers
    assert client.get("/login").status_code == 200


def test_a_job_is_listed_for_its_team_and_not_found_for_another(
    client: TestClient, team_a: TeamAuth, team_b: TeamAuth, tiny_cnn_path: Path
) -> None:
    job_id = _job(client, team_a, tiny_cnn_path, name="listed.onnx")
    _signed_in(client, team_a)
    listing = client.get("/")
    assert listing.status_code == 200 and f'href="/jobs/{job_id}"' in listing.text
    assert "listed.onnx" in listing.text
    queued_only = client.get("/", params={"state": "succeeded"})
    assert f'href="/jobs/{job_id}"' not in queued_only.text
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and "listed.onnx" in page.text
    data = re.search(r'<script type="application/json" id="job-data">(.*?)</script>', page.text)
    assert data is not None and f'"id": "{job_id}"' in data.group(1)

    _signed_in(client, team_b)
    hidden = client.get(f"/jobs/{job_id}")
    assert hidden.status_code == 404
    assert "Not found" in hidden.text and "listed.onnx" not in hidden.text
    assert f'href="/jobs/{job_id}"' not in client.get("/").text
    assert client.get(f"/jobs/{job_id}/artifact").status_code == 404
    assert client.get(f"/jobs/{job_id}/events").status_code == 404


def test_state_changes_need_the_forms_csrf_token(
    client: TestClient, team_a: TeamAuth, tiny_cnn_path: Path
) -> None:
    job_id = _job(client, team_a, tiny_cnn_path, name="csrf.onnx")
    _signed_in(client, team_a)
    for csrf in ("", "0" * 64):
        refused = client.post(f"/jobs/{job_id}/cancel", data={"csrf": csrf})
        assert refused.status_code == 403, refused.text
    other_site = client.post(
        f"/jobs/{job_id}/cancel",
        data={"csrf": csrf_token(team_a.token)},
        headers={"Origin": "https://evil.example"},
    )
    assert other_site.status_code == 403
    status = client.get(f"/v1/jobs/{job_id}", headers=team_a.headers).json()
    assert status["cancel_requested"] is False and status["state"] == "queued"

    page = client.get(f"/jobs/{job_id}")
    token = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert token is not None
    cancelled = client.post(
        f"/jobs/{job_id}/cancel", data={"csrf": token.group(1)}, follow_redirects=False
    )
    assert cancelled.status_code == 303
    status = client.get(f"/v1/jobs/{job_id}", headers=team_a.headers).json()
    assert status["state"] == "cancelled" or status["cancel_requested"] is True

    out = client.post("/logout", data={"csrf": token.group(1)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert COOKIE in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]


def test_markup_in_what_a_page_shows_is_escaped(client: TestClient, team_a: TeamAuth) -> None:
    _signed_in(client, team_a)
    markup = "<img src=x onerror=alert(1)>"
    page = client.get(f"/jobs/{markup}")  # "no job <img ...>" is shown on the page
    assert page.status_code == 404
    assert markup not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text


@pytest.mark.parametrize("scope", ["all", "mine", "promoted", "organisation"])
def test_the_records_and_workers_pages_render(
    client: TestClient, team_a: TeamAuth, scope: str
) -> None:
    _signed_in(client, team_a)
    page = client.get("/records", params={"scope": scope, "operator": "conv"})
    assert page.status_code == 200 and "Records" in page.text
    assert client.get("/records", params={"operator": "<b>"}).status_code == 422
    workers = client.get("/workers")
    assert workers.status_code == 200 and "Measure workers" in workers.text


def test_the_assets_are_served_by_the_api_itself(client: TestClient) -> None:
    assets = ("/static/vendor/uplot/uPlot.iife.min.js", "/static/job.js", "/static/dashboard.css")
    for path in assets:
        response = client.get(path)
        assert response.status_code == 200 and len(response.content) > 500, path
