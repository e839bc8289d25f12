"""Uploaded models: validated as a local compile would, stored once per content hash."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from tunefarm.api.errors import InvalidInput, NotFound
from tunefarm.api.schemas import Coverage, ModelDetail, ModelList, ModelOut, TaskCoverage
from tunefarm.api.services.coverage import AnalysisPending, best_times, model_analyses
from tunefarm.api.services.teams import Team
from tunefarm.tuner.errors import UserInputError
from tunefarm.tuner.model_validation import validate_onnx_model
from tunefarm.tuner.onnx_import import check_supported_operators
from tunefarm.tuner.settings import Settings
from tunefarm.tuner.targets import parse_target
from tunefarm.tuning_db import job_store
from tunefarm.tuning_db.schema import ModelRow, utc_now

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
_OBJECT_ID = re.compile(r"^[0-9a-f]{32}$")


def is_object_id(text: str) -> bool:
    """Whether ``text`` can be a model's or a job's id (a uuid4 in hex); anything else is not
    looked up at all, so no client string of any shape reaches a query."""
    return bool(_OBJECT_ID.match(text))


@dataclass(frozen=True)
class ReceivedFile:
    """An upload, streamed to a private folder under the data dir."""

    path: Path
    filename: str
    size: int
    sha256: str


def uploads_dir(settings: Settings) -> Path:
    path = settings.data_dir / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_file(settings: Settings, sha256: str) -> Path:
    return settings.data_dir / "models" / f"{sha256}.onnx"


def store_model(
    engine: Engine, settings: Settings, team: Team, upload: ReceivedFile
) -> tuple[ModelOut, bool]:
    """Validate the upload and file it for ``team``; returns the model and whether it is new."""
    try:
        validated = validate_onnx_model(upload.path, max_bytes=settings.max_model_bytes)
        check_supported_operators(validated)
    except UserInputError as err:
        # The message names our private upload path; the client knows the file by its name.
        raise InvalidInput(str(err).replace(str(upload.path), upload.filename)) from err
    summary = {
        "opset": validated.opset,
        "operators": dict(Counter(node.op_type for node in validated.onnx().graph.node)),
        "inputs": [signature.as_dict() for signature in validated.inputs],
        "outputs": [signature.as_dict() for signature in validated.outputs],
    }
    destination = model_file(settings, upload.sha256)
    if not destination.exists():
        destination.parent.mkdir(parents=True, exist_ok=True)
        # Content-addressed: a rename is atomic, and two teams' equal uploads share the file.
        os.replace(upload.path, destination)
    # Where coordinators read it from: once per content, so a job submit copies nothing.
    job_store.store_model_blob(engine, upload.sha256, destination.read_bytes)
    existing = _find(engine, team, sha256=upload.sha256)
    if existing is not None:
        return existing, False
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(ModelRow).values(
                    id=uuid.uuid4().hex,
                    team_id=team.id,
                    sha256=upload.sha256,
                    name=upload.filename,
                    size_bytes=upload.size,
                    summary_json=json.dumps(summary),
                    created_at=utc_now(),
                )
            )
    except IntegrityError:
        pass  # the same team uploaded the same bytes at the same moment
    model = _find(engine, team, sha256=upload.sha256)
    assert model is not None
    return model, existing is None


def get_model(
    engine: Engine,
    settings: Settings,
    team: Team,
    model_id: str,
    *,
    target: str | None = None,
    layout: str = "auto",
    fp16: bool = False,
) -> ModelDetail:
    model = _find(engine, team, model_id=model_id)
    if model is None:
        raise NotFound(f"no model {model_id}")
    if target is None:
        return ModelDetail(**model.model_dump())
    try:
        coverage = model_coverage(
            engine, settings, model_file(settings, model.sha256), target, layout=layout, fp16=fp16
        )
    except AnalysisPending:
        return ModelDetail(**model.model_dump(), coverage_state="pending")
    return ModelDetail(**model.model_dump(), coverage=coverage, coverage_state="ready")


def model_coverage(
    engine: Engine,
    settings: Settings,
    path: Path,
    target: str,
    *,
    layout: str,
    fp16: bool,
    max_age_sec: float = 0.0,
) -> Coverage:
    """The database's coverage of the model's tasks; ``max_age_sec``: how stale it may be.
    ``AnalysisPending`` while the model's tasks are being found."""
    parse_target(target)  # a bad target is the client's error, before any analysis
    analysis = model_analyses(settings).get((str(path), target, layout, fp16))
    best = best_times(
        engine,
        [task.workload_key for task in analysis.tasks],
        analysis.target_fingerprint,
        max_age_sec=max_age_sec,
    )
    tasks = [
        TaskCoverage(
            name=task.name,
            workload_key=task.workload_key,
            weight=task.weight,
            flops=task.flops,
            covered=task.workload_key in best,
            best_latency_us=round(best[task.workload_key] * 1e6, 3)
            if task.workload_key in best
            else None,
        )
        for task in analysis.tasks
    ]
    flops_total = sum(task.flops * task.weight for task in tasks)
    flops_covered = sum(task.flops * task.weight for task in tasks if task.covered)
    covered = sum(task.covered for task in tasks)
    return Coverage(
        target=target,
        target_fingerprint=analysis.target_fingerprint,
        tasks_total=len(tasks),
        tasks_covered=covered,
        tasks_percent=round(100.0 * covered / len(tasks), 2) if tasks else 100.0,
        flops_percent=round(100.0 * flops_covered / flops_total, 2) if flops_total else 100.0,
        tasks=tasks,
    )


def list_models(engine: Engine, team: Team, *, limit: int, offset: int) -> ModelList:
    with engine.connect() as connection:
        rows = connection.execute(
            select(ModelRow)
            .where(ModelRow.team_id == team.id)
            .order_by(ModelRow.created_at.desc(), ModelRow.id)
            .limit(limit + 1)
            .offset(offset)
        ).all()
    items = [_model_out(row) for row in rows[:limit]]
    return ModelList(items=items, next_offset=offset + limit if len(rows) > limit else None)


def store_model_blob(engine: Engine, settings: Settings, model: ModelOut) -> None:
    """Make sure coordinators can read the model (``model_blobs``). Stored at upload; a model
    uploaded before model_blobs existed is stored on its first job. Known per process, so a
    submit asks the database once per model, not on every job."""
    if model.sha256 in _stored_blobs:
        return
    job_store.store_model_blob(engine, model.sha256, model_file(settings, model.sha256).read_bytes)
    _stored_blobs.add(model.sha256)


_stored_blobs: set[str] = set()


def find_model(engine: Engine, team: Team, model_id: str) -> ModelOut:
    # A model never changes once stored, so it is remembered: every job status and submit
    # needs its file.
    cache_key = (id(engine), team.id, model_id)
    model = _known_models.get(cache_key) or _find(engine, team, model_id=model_id)
    if model is None:
        raise NotFound(f"no model {model_id}")
    if len(_known_models) > 10_000:
        _known_models.clear()
    _known_models[cache_key] = model
    return model


_known_models: dict[tuple[int, int, str], ModelOut] = {}


def _find(
    engine: Engine, team: Team, *, model_id: str | None = None, sha256: str | None = None
) -> ModelOut | None:
    if model_id is not None and not is_object_id(model_id):
        return None
    query = select(ModelRow).where(ModelRow.team_id == team.id)
    if model_id is not None:
        query = query.where(ModelRow.id == model_id)
    if sha256 is not None:
        query = query.where(ModelRow.sha256 == sha256)
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return _model_out(row) if row is not None else None


def _model_out(row: Any) -> ModelOut:
    summary = json.loads(row.summary_json)
    return ModelOut(
        id=row.id,
        name=row.name,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
        **summary,
    )


def new_upload_path(settings: Settings, filename: str) -> Path:
    """A fresh private folder for one upload; the model file is alone in it, so any external
    data it names is missing or outside it, and is rejected."""
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=uploads_dir(settings)))
    return folder / safe_filename(filename)


def safe_filename(filename: str) -> str:
    """The client's file name if it is a plain one, else ``model.onnx``."""
    name = Path(filename).name
    if _PLAIN_NAME.match(name) and name not in (".", ".."):
        return name
    return "model.onnx"


def discard_upload(path: Path) -> None:
    shutil.rmtree(path.parent, ignore_errors=True)
