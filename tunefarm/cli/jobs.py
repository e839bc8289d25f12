"""``tunefarm jobs``: list, show and cancel farm jobs."""

from __future__ import annotations

import json

import typer

from tunefarm.cli.app import DatabaseOption, JobIdArgument, app, database_url, fail

jobs_app = typer.Typer(help="Farm jobs: list, show, cancel.")
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
