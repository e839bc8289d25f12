"""The client side of farm mode: submit a job, follow it, download what it made."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from tunefarm.cli.app import counted
from tunefarm.cli.job_display import JobSnapshot
from tunefarm.tuner.compile_job import CompileOptions
from tunefarm.tuner.model_validation import validate_onnx_model
from tunefarm.tuner.torch_import import (
    exported_program_as_onnx,
    is_exported_program,
    validate_exported_program,
)
from tunefarm.tuning_db import job_store
from tunefarm.tuning_db.job_store import JobView
from tunefarm.workers.job_tasks import submit_job


def onnx_for_the_farm(
    path: Path, scratch: Path, *, max_bytes: int, say: Callable[[str], None]
) -> Path:
    """The file a farm job takes: an ONNX model as it is, a ``.pt2`` program converted to ONNX
    here (the farm's processes never load a ``.pt2`` file: torch's loader is not for input
    from strangers)."""
    if not is_exported_program(path):
        return path
    converted = exported_program_as_onnx(
        validate_exported_program(path, max_bytes=max_bytes), scratch / f"{path.stem}.onnx"
    )
    say(f"converted {path.name} to ONNX here ({converted.name}): the farm takes ONNX models only")
    return converted


def submit_compile(
    options: CompileOptions, *, engine: Engine, say: Callable[[str], None] = lambda _: None
) -> str:
    """Validate here, store the model in the job row, and queue the job for a coordinator."""
    with tempfile.TemporaryDirectory(prefix="tunefarm-submit-") as scratch:
        model = onnx_for_the_farm(
            options.model_path, Path(scratch), max_bytes=options.max_model_bytes, say=say
        )
        validated = validate_onnx_model(model, max_bytes=options.max_model_bytes)
        # The validated model has its external data inlined: the job needs no other file.
        data = validated.onnx().SerializeToString()
        sha256 = hashlib.sha256(data).hexdigest()
        job_store.store_model_blob(engine, sha256, lambda: data)
        job_id = job_store.create_job(
            engine,
            model_name=model.name,
            model_sha256=sha256,
            options=options.spec.model_dump(mode="json"),
        ).id
    submit_job(job_id)
    return job_id


def follow(
    engine: Engine,
    job_id: str,
    *,
    on_update: Callable[[JobView], None],
    poll_sec: float = 0.5,
) -> JobView:
    """Poll the job until it ends; ``on_update`` sees every snapshot."""
    while True:
        job = job_store.get_job(engine, job_id)
        if job is None:
            raise LookupError(f"job {job_id} is not in the database")
        on_update(job)
        if job.finished:
            return job
        time.sleep(poll_sec)


def download(engine: Engine, job: JobView, out_dir: Path) -> tuple[Path, Path]:
    library = job_store.read_library(engine, job.id)
    if library is None or job.manifest is None:
        raise LookupError(f"job {job.id} has no library")
    out_dir.mkdir(parents=True, exist_ok=True)
    library_path = out_dir / "model.so"
    library_path.write_bytes(library)
    manifest_path = out_dir / "manifest.json"
    manifest_path.write_text(json.dumps(job.manifest, indent=2) + "\n")
    return library_path, manifest_path


def job_snapshot(job: JobView) -> JobSnapshot:
    """What the progress display shows of a job row."""
    progress = job.progress
    best_us = progress.best_us_sum
    # Unweighted, over the tasks measured so far: what the job row knows, said as such.
    best_text = f"{best_us / 1000:.3f} ms" if best_us is not None else "—"
    return JobSnapshot(
        state=job.state,
        message=progress.message or "",
        trials_done=progress.trials,
        trials_total=progress.trials_total,
        detail=f"measured tasks' best {best_text} · {counted(len(progress.measured_by), 'worker')}",
    )
