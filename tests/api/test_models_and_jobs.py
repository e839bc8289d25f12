"""Models and jobs through the API in-process: upload, dedup, coverage, submit, list, cancel."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.api.conftest import TeamAuth, coverage_of, upload


def test_the_same_upload_twice_is_the_same_model(
    client: TestClient, team_a: TeamAuth, tiny_cnn_path: Path
) -> None:
    with tiny_cnn_path.open("rb") as stream:
        first = client.post(
            "/v1/models", files={"file": ("cnn.onnx", stream)}, headers=team_a.headers
        )
    assert first.status_code == 201, first.text
    with tiny_cnn_path.open("rb") as stream:
        second = client.post(
            "/v1/models", files={"file": ("again.onnx", stream)}, headers=team_a.headers
        )
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"]
    model = first.json()
    assert model["inputs"] == [{"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert model["operators"]["Conv"] >= 1
    listed = client.get("/v1/models", headers=team_a.headers).json()["items"]
    assert [m["id"] for m in listed].count(model["id"]) == 1


def test_model_coverage_for_a_target(
    client: TestClient, team_a: TeamAuth, tiny_cnn_path: Path
) -> None:
    model = upload(client, team_a, tiny_cnn_path)
    coverage = coverage_of(client, model["id"], "llvm", team_a.headers)["coverage"]
    assert coverage["tasks_total"] >= 2
    assert coverage["tasks_covered"] == 0  # an empty database
    assert all(len(task["workload_key"]) == 64 for task in coverage["tasks"])


def test_submit_list_filter_and_cancel(
    client: TestClient, team_a: TeamAuth, tiny_cnn_path: Path
) -> None:
    model = upload(client, team_a, tiny_cnn_path)
    submitted = []
    for trials in (0, 8, 16):
        response = client.post(
            "/v1/jobs",
            json={
                "model_id": model["id"],
                "target": "llvm",
                "trials": trials,
                "options": {"layout": "NCHW"},
            },
            headers=team_a.headers,
        )
        assert response.status_code == 201, response.text
        assert response.json()["state"] == "queued"  # no coordinator runs in this module
        submitted.append(response.json()["id"])

    page = client.get("/v1/jobs", params={"limit": 2}, headers=team_a.headers).json()
    assert len(page["items"]) == 2 and page["next_offset"] == 2
    rest = client.get("/v1/jobs", params={"limit": 2, "offset": 2}, headers=team_a.headers).json()
    ids = [j["id"] for j in page["items"] + rest["items"]]
    assert set(submitted) <= set(ids) and len(ids) == len(set(ids))

    cancelled = client.post(f"/v1/jobs/{submitted[0]}/cancel", headers=team_a.headers)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    only = client.get("/v1/jobs", params={"state": "cancelled"}, headers=team_a.headers).json()
    assert submitted[0] in [j["id"] for j in only["items"]]
    assert all(j["state"] == "cancelled" for j in only["items"])

    status = client.get(f"/v1/jobs/{submitted[1]}", headers=team_a.headers).json()
    assert status["trials"] == 8 and status["options"]["layout"] == "NCHW"
    # A queued job's coverage is its model's, once found (pending until then: no coverage).
    coverage_of(client, model["id"], "llvm", team_a.headers, layout="NCHW")
    status = client.get(f"/v1/jobs/{submitted[1]}", headers=team_a.headers).json()
    assert status["coverage"]["tasks_covered"] == 0
    no_artifact = client.get(f"/v1/jobs/{submitted[1]}/artifact", headers=team_a.headers)
    assert no_artifact.status_code == 409 and "queued" in no_artifact.json()["error"]["message"]


def test_healthz_needs_no_token_and_is_not_in_the_spec(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert "/healthz" not in client.get("/openapi.json").json()["paths"]
