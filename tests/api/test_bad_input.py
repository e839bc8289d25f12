"""Bad input: each case is a 4xx whose message names the problem, never a 500, and nothing
is written (no model, job or record appears)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from tests.api.conftest import UPLOAD_LIMIT, TeamAuth, upload
from tests.api.records_json import matmul_document
from tests.tuner import bad_models
from tunefarm.tuning_db.schema import JobRow, ModelRow, TuningRecordRow


@dataclass(frozen=True)
class BadInput:
    name: str
    status: int
    says: str
    """A piece of the message that names the problem."""
    send: Callable[[TestClient, Context], httpx.Response]


@dataclass(frozen=True)
class Context:
    team: TeamAuth
    other_team: TeamAuth
    model_id: str
    other_model_id: str
    folder: Path


def _upload_file(
    path_of: Callable[[Path], Path],
) -> Callable[[TestClient, Context], httpx.Response]:
    def send(client: TestClient, context: Context) -> httpx.Response:
        path = path_of(context.folder)
        return client.post(
            "/v1/models",
            files={"file": (path.name, path.read_bytes())},
            headers=context.team.headers,
        )

    return send


def _upload_bytes(
    data: bytes, name: str = "model.onnx"
) -> Callable[[TestClient, Context], httpx.Response]:
    return lambda client, context: client.post(
        "/v1/models", files={"file": (name, data)}, headers=context.team.headers
    )


def _zip_bomb() -> bytes:
    """A small archive that inflates to 64 MiB of zeros."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.onnx", b"\0" * (64 * 1024**2))
    return buffer.getvalue()


def _submit(**changes: Any) -> Callable[[TestClient, Context], httpx.Response]:
    def send(client: TestClient, context: Context) -> httpx.Response:
        body = {"model_id": context.model_id, "target": "llvm", "trials": 8, **changes}
        if body["model_id"] == "OTHER":
            body["model_id"] = context.other_model_id
        return client.post("/v1/jobs", json=body, headers=context.team.headers)

    return send


def _import(
    change: Callable[[dict[str, Any]], None],
) -> Callable[[TestClient, Context], httpx.Response]:
    def send(client: TestClient, context: Context) -> httpx.Response:
        document = matmul_document()
        change(document)
        return client.post("/v1/records/import", json=document, headers=context.team.headers)

    return send


def _set_run_secs(value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["records"][0][1][1] = value

    return change


def _pt2_upload(client: TestClient, context: Context) -> httpx.Response:
    """A real torch.export program: the server reads ONNX only, and never unpickles a .pt2."""
    import torch

    path = context.folder / "model.pt2"
    program = torch.export.export(torch.nn.Linear(4, 2).eval(), (torch.randn(1, 4),))
    torch.export.save(program, str(path))
    return client.post(
        "/v1/models", files={"file": (path.name, path.read_bytes())}, headers=context.team.headers
    )


def _chunked_oversized(client: TestClient, context: Context) -> httpx.Response:
    def chunks() -> Iterator[bytes]:
        boundary = b'--b\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n'
        yield boundary
        for _ in range(UPLOAD_LIMIT // (1 << 20) + 2):
            yield b"\0" * (1 << 20)

    return client.post(
        "/v1/models",
        content=chunks(),
        headers={**context.team.headers, "Content-Type": "multipart/form-data; boundary=b"},
    )


CASES = [
    BadInput(
        "external data outside the upload",
        422,
        "outside the model's folder",
        _upload_file(bad_models.external_data_outside),
    ),
    BadInput("a truncated protobuf", 422, "truncated", _upload_file(bad_models.truncated)),
    BadInput("not ONNX at all", 422, "not an ONNX model", _upload_file(bad_models.not_onnx)),
    BadInput(
        "an allocation bomb (issue 21)",
        422,
        "would build a tensor of 4.0 GiB",
        _upload_file(bad_models.allocation_bomb),
    ),
    BadInput("an empty file", 422, "empty", _upload_bytes(b"")),
    BadInput(
        "an oversized body",
        413,
        f"limit of {UPLOAD_LIMIT} bytes",
        _upload_bytes(b"\0" * (UPLOAD_LIMIT + 1)),
    ),
    BadInput("an oversized body without a length", 413, "over the limit", _chunked_oversized),
    BadInput(
        "a zip-bomb-like archive (archives are not accepted)",
        422,
        "not an ONNX model",
        _upload_bytes(_zip_bomb(), "model.zip"),
    ),
    BadInput("a torch.export program (.pt2)", 422, "not an ONNX model", _pt2_upload),
    BadInput(
        "an unsupported operator",
        422,
        "Einsum2000",
        _upload_file(bad_models.unsupported_operator),
    ),
    BadInput(
        "dynamic input shapes", 422, "dynamic dimension", _upload_file(bad_models.dynamic_batch)
    ),
    BadInput(
        "no file field",
        422,
        "field named 'file'",
        lambda client, context: client.post(
            "/v1/models", data={"model": "x"}, headers=context.team.headers
        ),
    ),
    BadInput("an unknown target", 422, "unknown target kind 'tpu'", _submit(target="tpu")),
    BadInput("a target option that does not parse", 422, "-key=value", _submit(target="llvm fast")),
    BadInput("negative trials", 422, "trials", _submit(trials=-1)),
    BadInput("an unknown job option", 422, "options.turbo", _submit(options={"turbo": True})),
    BadInput("a bad layout", 422, "options.layout", _submit(options={"layout": "NWHC"})),
    BadInput("another team's model", 404, "no model", _submit(model_id="OTHER")),
    BadInput(
        "a malformed token",
        401,
        "malformed token",
        lambda client, context: client.get("/v1/jobs", headers={"Authorization": "Bearer abc"}),
    ),
    BadInput(
        "another team's job id",
        404,
        "no job",
        lambda client, context: client.get(
            f"/v1/jobs/{context.other_job_id}",
            headers=context.team.headers,  # type: ignore[attr-defined]
        ),
    ),
    BadInput(
        "a workload that is not base64",
        422,
        "workload 0",
        _import(lambda d: d["workloads"].__setitem__(0, ["123", "%%% not base64 %%%"])),
    ),
    BadInput(
        "a record naming a missing workload",
        422,
        "names workload 7",
        _import(lambda d: d["records"][0].__setitem__(0, 7)),
    ),
    BadInput(
        "a record that is not a list",
        422,
        "records.0",
        _import(lambda d: d["records"].__setitem__(0, {"trace": []})),
    ),
    BadInput(
        "a record with an unknown target",
        422,
        "unknown target kind 'tpu'",
        _import(lambda d: d["records"][0][1].__setitem__(2, {"kind": "tpu"})),
    ),
    BadInput(
        "a record whose trace is garbage",
        422,
        "record 0 is not a MetaSchedule tuning record",
        _import(lambda d: d["records"][0][1].__setitem__(0, [["bogus"], "x"])),
    ),
    BadInput("a record with a negative run_secs", 422, "run_secs", _import(_set_run_secs([-1.0]))),
    BadInput("a record with a zero run_secs", 422, "run_secs", _import(_set_run_secs([0.0]))),
    BadInput("a record with no run_secs", 422, "run_secs", _import(_set_run_secs([]))),
    BadInput(
        "a record with a run_secs of the failure marker",
        422,
        "run_secs",
        _import(_set_run_secs([1e10])),
    ),
    BadInput(
        "promoting another team's record",
        404,
        "no record",
        lambda client, context: client.post(
            "/v1/records/promote",
            json={"record_ids": [context.other_record_id]},  # type: ignore[attr-defined]
            headers=context.team.headers,
        ),
    ),
    BadInput(
        "a JSON body that does not parse",
        422,
        "JSON",
        lambda client, context: client.post(
            "/v1/jobs",
            content=b'{"model_id": ',
            headers={**context.team.headers, "Content-Type": "application/json"},
        ),
    ),
]


@dataclass(frozen=True)
class FullContext(Context):
    other_job_id: str
    other_record_id: int


@pytest.fixture(scope="module")
def context(
    client: TestClient,
    team_a: TeamAuth,
    team_b: TeamAuth,
    tiny_cnn_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> FullContext:
    mine = upload(client, team_a, tiny_cnn_path)
    theirs = upload(client, team_b, tiny_cnn_path)
    job = client.post(
        "/v1/jobs",
        json={"model_id": theirs["id"], "target": "llvm", "trials": 1},
        headers=team_b.headers,
    ).json()
    client.post("/v1/records/import", json=matmul_document(factors=(16,)), headers=team_b.headers)
    record = next(
        r for r in client.get("/v1/records", headers=team_b.headers).json()["items"] if r["mine"]
    )
    return FullContext(
        team=team_a,
        other_team=team_b,
        model_id=mine["id"],
        other_model_id=theirs["id"],
        folder=tmp_path_factory.mktemp("bad-models"),
        other_job_id=job["id"],
        other_record_id=record["id"],
    )


def _counts(engine: Engine) -> tuple[int, ...]:
    with engine.connect() as connection:
        return tuple(
            int(connection.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (ModelRow, JobRow, TuningRecordRow)
        )


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input_is_a_4xx_that_names_the_problem(
    client: TestClient, engine: Engine, context: FullContext, case: BadInput
) -> None:
    before = _counts(engine)
    response = case.send(client, context)
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert case.says in error["message"], error
    assert "Traceback" not in response.text
    assert _counts(engine) == before  # nothing half-written, nothing lost


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 12


class _Payload:
    """Unpickled, this would create ``marker``: the proof that a server ran code it was sent."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.mkdir, (str(self.marker),))


def test_a_pt2_archive_with_a_pickle_that_runs_code_is_refused_and_nothing_ran(
    client: TestClient, engine: Engine, context: FullContext, tmp_path: Path
) -> None:
    import pickle

    marker = tmp_path / "the-payload-ran"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        # Where torch.export.save puts its pickled parts.
        bundle.writestr("model/data.pkl", pickle.dumps(_Payload(marker)))
        bundle.writestr("model/models/model.json", "{}")
        bundle.writestr("model/version", "8.0")
    assert not marker.exists()
    before = _counts(engine)
    response = client.post(
        "/v1/models",
        files={"file": ("model.pt2", archive.getvalue())},
        headers=context.team.headers,
    )
    assert response.status_code == 422, response.text
    assert "not an ONNX model" in response.json()["error"]["message"]
    assert not marker.exists()
    assert _counts(engine) == before
    # The payload is live: unpickling it is what would have created the marker.
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.is_dir()
