"""``tunefarm jobs``: list, show, follow, download and cancel farm jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tunefarm.cli.app import (
    EXIT_INTERNAL_ERROR,
    EXIT_USER_ERROR,
    DatabaseOption,
    JobIdArgument,
    app,
    console,
    database_url,
    fail,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tunefarm.tuning_db.job_store import JobView

jobs_app = typer.Typer(help="Farm jobs: list, show, follow, download, cancel.")
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def jobs_list_command(db: DatabaseOption = None) -> None:
    """The newest jobs, one line each."""
    from tunefarm.tuning_db import job_store
    from tunefarm.tuning_db.sql_database import open_engine

    for job in job_store.list_jobs(open_engine(database_url(db))):
        trials = job.progress.trials
        print(f"{job.id}  {job.state:<10} {job.model_name}  trials {trials}  {job.error or ''}")


@jobs_app.command("show")
def jobs_show_command(
    job_id: JobIdArgument,
    db: DatabaseOption = None,
) -> None:
    """The job's state, progress and result as JSON."""
    from dataclasses import asdict

    from tunefarm.tuning_db import job_store
    from tunefarm.tuning_db.sql_database import open_engine

    job = job_store.get_job(open_engine(database_url(db)), job_id)
    if job is None:
        fail(f"no job {job_id}")
    shown = asdict(job) | {"progress": job.progress.model_dump(mode="json", exclude_none=True)}
    print(json.dumps(shown, indent=2, default=str))


@jobs_app.command("cancel")
def jobs_cancel_command(
    job_id: JobIdArgument,
    db: DatabaseOption = None,
) -> None:
    """Stop a job: no new trials after the batch in flight."""
    from tunefarm.tuning_db import job_store
    from tunefarm.tuning_db.sql_database import open_engine

    job = job_store.request_cancel(open_engine(database_url(db)), job_id)
    if job is None:
        fail(f"no job {job_id}")
    print(f"job {job_id}: {job.state}, cancel requested")


@jobs_app.command("follow")
def jobs_follow_command(
    job_id: JobIdArgument,
    out: Annotated[
        Path | None, typer.Option(help="Also download model.so and manifest.json here.")
    ] = None,
    db: DatabaseOption = None,
) -> None:
    """Follow a job to its end, as `compile --farm` does (after a Ctrl-C, say)."""
    from tunefarm.cli.farm_client import download
    from tunefarm.tuning_db.sql_database import open_engine

    engine = open_engine(database_url(db))
    job = follow_to_the_end(engine, job_id)
    if out is None:
        print(f"job {job_id}: succeeded (tunefarm jobs download {job_id} --out DIR fetches it)")
        return
    library, manifest = download(engine, job, out)
    print(f"library:  {library}")
    print(f"manifest: {manifest}")


@jobs_app.command("download")
def jobs_download_command(
    job_id: JobIdArgument,
    out: Annotated[Path, typer.Option(help="Folder for model.so and manifest.json.")] = Path("out"),
    db: DatabaseOption = None,
) -> None:
    """Download a finished job's library and manifest."""
    from tunefarm.cli.farm_client import download
    from tunefarm.tuning_db import job_store
    from tunefarm.tuning_db.job_state import JobState
    from tunefarm.tuning_db.sql_database import open_engine

    engine = open_engine(database_url(db))
    job = job_store.get_job(engine, job_id)
    if job is None:
        fail(f"no job {job_id}")
    if job.state is not JobState.SUCCEEDED:
        fail(f"job {job_id} is {job.state}; it has a library once it has succeeded")
    library, manifest = download(engine, job, out)
    print(f"library:  {library}")
    print(f"manifest: {manifest}")


def follow_to_the_end(engine: Engine, job_id: str) -> JobView:
    """Show the job's progress until it ends, and return it once it has succeeded; a failed or
    cancelled job fails the command."""
    from tunefarm.cli.farm_client import follow, job_snapshot
    from tunefarm.cli.job_display import JobProgressDisplay
    from tunefarm.tuning_db import job_store
    from tunefarm.tuning_db.job_state import JobState

    if job_store.get_job(engine, job_id) is None:
        fail(f"no job {job_id}")
    display = JobProgressDisplay(console, job_id, label="tuning on the farm")
    try:
        job = follow(engine, job_id, on_update=lambda job: display.show(job_snapshot(job)))
    except KeyboardInterrupt:
        fail(
            f"stopped following job {job_id}; it keeps running "
            f"(tunefarm jobs follow {job_id} --out DIR picks it up again, "
            f"tunefarm jobs cancel {job_id} stops it)",
            130,
        )
    finally:
        display.close()
    if job.state is JobState.FAILED:
        fail(
            f"job {job_id} failed: {job.error}",
            EXIT_USER_ERROR if job.error_kind == "user" else EXIT_INTERNAL_ERROR,
        )
    if job.state is JobState.CANCELLED:
        fail(f"job {job_id} was cancelled", EXIT_INTERNAL_ERROR)
    return job
