"""The client side of farm mode: submit a job, follow it, download what it made."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from tuner.compile_job import CompileOptions, check_options
from tuner.model_validation import validate_onnx_model
from tuning_db import job_store
from tuning_db.job_store import JobView
from workers.job_tasks import submit_job


def submit_compile(options: CompileOptions, *, engine: Engine) -> str:
    """Validate here, store the model in the job row, and queue the job for a coordinator."""
    check_options(options)
    validated = validate_onnx_model(options.model_path, max_bytes=options.max_model_bytes)
    job_options: dict[str, Any] = {
        "target": options.target,
        "trials": options.trials,
        "max_trials_per_task": options.max_trials_per_task,
        "layout": options.layout,
        "fp16": options.fp16,
        "cuda_graph": options.cuda_graph,
        "seed": options.seed,
    }
    # The validated model has its external data inlined: the job needs no other file.
    job_id = job_store.create_job(
        engine,
        model_name=options.model_path.name,
        model_onnx=validated.model.SerializeToString(),
        options=job_options,
    )
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


class JobProgressDisplay:
    """A progress bar for a farm job on a terminal; silent otherwise."""

    def __init__(self, console: Console, job_id: str) -> None:
        self.console = console
        self.enabled = console.is_terminal
        self.job_id = job_id
        self._progress: Progress | None = None
        self._bar: Any = None
        self._state = ""

    def __call__(self, job: JobView) -> None:
        if not self.enabled:
            return
        if job.state != self._state:
            self._state = job.state
            message = job.progress.get("message", "")
            self.console.print(f"[bold cyan]•[/] job {self.job_id}: {job.state} {message}")
        total = job.progress.get("trials_total")
        if job.state == "tuning" and total:
            if self._progress is None:
                self._progress = Progress(
                    TextColumn("tuning on the farm"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn(
                        "trials · best {task.fields[best]} · {task.fields[workers]} workers"
                    ),
                    TimeElapsedColumn(),
                    console=self.console,
                )
                self._progress.start()
                self._bar = self._progress.add_task("farm", total=total, best="—", workers=0)
            best = [t["best_us"] for t in job.progress.get("tasks", {}).values() if t["best_us"]]
            self._progress.update(
                self._bar,
                completed=job.progress.get("trials", 0),
                best=f"{sum(best) / 1000:.3f} ms" if best else "—",
                workers=len(job.progress.get("measured_by", {})),
            )
        elif self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
