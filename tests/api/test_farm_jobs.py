"""Whole jobs through a real `tunefarm serve` (uvicorn) with real workers, Redis and PostgreSQL.

The module starts one measure worker, one coordinator and the API once; the tests share them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime
import tvm
from sqlalchemy import delete, func, select
from tvm import relax

from tests.api.conftest import coverage_of
from tests.api.farm_fixture import Farm
from tunefarm.tuning_db.schema import TuningRecordRow
from tunefarm.tuning_db.sql_database import open_engine

TARGET = "llvm"


def _events(client: httpx.Client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=600) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
                if name == "end":
                    break
    return events


def _upload(client: httpx.Client, path: Path) -> dict[str, Any]:
    with path.open("rb") as stream:
        response = client.post("/v1/models", files={"file": (path.name, stream)})
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


def _submit(client: httpx.Client, model_id: str, trials: int) -> str:
    response = client.post(
        "/v1/jobs",
        json={"model_id": model_id, "target": TARGET, "trials": trials, "options": {"seed": 3}},
    )
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_a_full_job_through_http(farm: Farm, tiny_cnn_path: Path, tmp_path: Path) -> None:
    with farm.client("a") as client:
        model = _upload(client, tiny_cnn_path)
        job_id = _submit(client, model["id"], trials=8)
        events = _events(client, job_id)

        names = [name for name, _ in events]
        assert names[-1] == "end" and names.count("end") == 1
        states = [data["state"] for _, data in events]
        assert "tuning" in states
        assert events[-1][1]["state"] == "succeeded", events[-1][1]
        trials = [data["trials_done"] for _, data in events]
        assert trials == sorted(trials) and trials[-1] == 8

        status = client.get(f"/v1/jobs/{job_id}").json()
        assert status["coverage"]["tasks_total"] >= 2
        # The end event is the same status (issue 19: its coverage was null).
        assert events[-1][1]["coverage"] == status["coverage"]
        assert status["best_latency_ms"] > 0
        assert status["error"] is None

        manifest = client.get(f"/v1/jobs/{job_id}/manifest").json()
        artifact = client.get(f"/v1/jobs/{job_id}/artifact")
        assert artifact.status_code == 200
        sha256 = hashlib.sha256(artifact.content).hexdigest()
        assert sha256 == manifest["library"]["sha256"] == artifact.headers["x-content-sha256"]
        assert manifest["latency"]["tuned"]["p50_ms"] > 0

        # Issue 20: the report, drawn from the manifest and the trials the job filed.
        report = client.get(f"/v1/jobs/{job_id}/report")
        assert report.status_code == 200
        assert report.headers["content-type"].startswith("text/html")
        assert report.text.count("<polyline") >= 2
        assert all(task["name"] in report.text for task in manifest["tasks"])
    with farm.client("b") as other:
        assert other.get(f"/v1/jobs/{job_id}/report").status_code == 404

    library = tmp_path / "model.so"
    library.write_bytes(artifact.content)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    image = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype("float32")
    session = onnxruntime.InferenceSession(str(tiny_cnn_path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"image": image})
    np.testing.assert_allclose(
        vm["main"](tvm.runtime.tensor(image)).numpy(), expected, rtol=1e-4, atol=1e-4
    )


def test_cli_submit_wait_and_download(farm: Farm, tiny_cnn_path: Path, tmp_path: Path) -> None:
    submitted = farm.cli(
        "submit", str(tiny_cnn_path), "--target", TARGET, "--trials", "0", "--wait"
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.splitlines()[0].strip()
    assert "succeeded" in submitted.stdout

    downloaded = farm.cli("download", job_id, "--out", str(tmp_path / "out"))
    assert downloaded.returncode == 0, downloaded.stderr
    assert "verified" in downloaded.stdout
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    library = (tmp_path / "out" / "model.so").read_bytes()
    assert hashlib.sha256(library).hexdigest() == manifest["library"]["sha256"]

    # Another team's job is not there for team b; the CLI says so in one line, exit code 2.
    refused = farm.cli("download", job_id, "--out", str(tmp_path / "b"), team="b")
    assert refused.returncode == 2
    assert f"no job {job_id}" in refused.stderr and "Traceback" not in refused.stderr


def test_a_1ns_record_imported_by_another_team_is_never_used(
    farm: Farm, tiny_cnn_path: Path
) -> None:
    engine = open_engine(farm.db_url)
    with farm.client("a") as team_a, farm.client("b") as team_b:
        exported = team_a.get("/v1/records/export").json()
        assert exported["records"], "the first test left records to copy"
        # Team b claims every one of these schedules runs in 1 ns, on a farm that has not
        # measured them (their own records are gone).
        with engine.begin() as connection:
            connection.execute(delete(TuningRecordRow))
        for line in exported["records"]:
            line[1][1] = [1e-9]
        imported = team_b.post("/v1/records/import", json=exported)
        assert imported.status_code == 200, imported.text
        assert imported.json()["records_added"] == len(exported["records"])

        model = _upload(team_a, tiny_cnn_path)
        coverage = coverage_of(team_a, model["id"], TARGET)
        assert coverage["coverage"]["tasks_covered"] == 0  # a claim is not coverage

        job_id = _submit(team_a, model["id"], trials=0)
        final = _events(team_a, job_id)[-1][1]
        assert final["state"] == "succeeded", final
        manifest = team_a.get(f"/v1/jobs/{job_id}/manifest").json()

    for task in manifest["tasks"]:
        if task["best_latency_us"] is not None:
            assert task["best_latency_us"] > 0.05, task  # 1 ns is 0.001 us
    with engine.connect() as connection:
        claims_left = connection.execute(
            select(func.count()).select_from(TuningRecordRow).where(~TuningRecordRow.verified)
        ).scalar_one()
        fastest = connection.execute(
            select(func.min(TuningRecordRow.mean_run_sec)).where(TuningRecordRow.verified)
        ).scalar_one()
    assert claims_left == 0  # every claim the job needed was measured by our worker
    assert fastest is None or fastest > 1e-8
    assert manifest["latency"]["tuned"]["p50_ms"] > 0.001
    engine.dispose()
