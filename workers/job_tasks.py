"""The job task (coordinators' queue) and the reaper that resumes abandoned jobs."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from functools import cache

from celery import Celery, Task
from sqlalchemy import Engine
from tvm.target import Target

from tunefarm.tuner.settings import Settings
from tunefarm.tuning_db import job_store
from tunefarm.tuning_db.sql_database import open_engine
from tunefarm.workers.celery_app import app
from tunefarm.workers.farm_executor import CeleryTrialExecutor
from tunefarm.workers.queues import JOBS_QUEUE, measure_queue

RUN_JOB_TASK = "tunefarm.run_job"
REAP_EVERY_SEC = 2.0
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")

logger = logging.getLogger(__name__)


_ENGINE_LOCK = threading.Lock()


@cache
def _open_engine() -> Engine:
    return open_engine(Settings().resolved_database_url())


def _engine() -> Engine:
    # The job task and the reaper thread may ask first at the same time.
    with _ENGINE_LOCK:
        return _open_engine()


def coordinator_name() -> str:
    return f"coordinator-{os.getpid()}@{socket.gethostname()}"


def _make_executor(target: Target) -> CeleryTrialExecutor:
    settings = Settings()
    return CeleryTrialExecutor(
        app,
        measure_queue(target),
        chunk_size=settings.measure_chunk_size,
        timeout_sec=settings.measure_timeout_sec,
        queue_timeout_sec=settings.measure_queue_timeout_sec,
    )


START_RETRIES = 5


@app.task(name=RUN_JOB_TASK, bind=True, max_retries=START_RETRIES)
def run_job_task(self: Task, job_id: str) -> str:
    """Run one job; a plain function does the work (``workers.coordinator.run_job``).

    ``run_job`` records every failure of a job it has claimed. A failure before that (the
    database away at start-up, say) is retried a few times, then written to the job, so no
    job is left queued with nobody to run it.
    """
    from tunefarm.workers.coordinator import run_job

    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    settings = Settings()
    try:
        return run_job(
            job_id,
            engine=_engine(),
            database_url=settings.resolved_database_url(),
            owner=coordinator_name(),
            make_executor=_make_executor,
            lease_sec=settings.job_lease_sec,
        )
    except Exception as err:
        logger.exception("job %s could not start", job_id)
        if self.request.retries < START_RETRIES:
            raise self.retry(exc=err, countdown=3) from err
        job_store.fail_unclaimed(
            _engine(), job_id, error=f"internal error: the job could not start: {err}"
        )
        return "failed"


def submit_job(job_id: str, *, celery: Celery = app) -> None:
    """Queue the job for a coordinator; ``celery`` is the API's own app when it has one."""
    celery.send_task(RUN_JOB_TASK, args=[job_id], queue=JOBS_QUEUE)


def reap_once(
    engine: Engine, *, hold_sec: float, unclaimed_after_sec: float | None = None
) -> list[str]:
    """Send every job whose coordinator died, or (``unclaimed_after_sec``) whose queue
    message may be lost, back to the jobs queue; return their ids. A message sent twice is
    harmless: the second finds the job claimed or finished."""
    requeued = []
    for job_id in job_store.abandoned_jobs(engine, unclaimed_after_sec=unclaimed_after_sec):
        if job_store.mark_requeued(engine, job_id, hold_sec=hold_sec):
            logger.warning(
                "job %s has no coordinator and none took it; sending it to the jobs queue again",
                job_id,
            )
            submit_job(job_id)
            requeued.append(job_id)
    return requeued


def start_reaper(stop: threading.Event) -> threading.Thread:
    """Look for abandoned jobs every few seconds, for as long as this coordinator runs."""
    settings = Settings()

    def loop() -> None:
        while not stop.wait(REAP_EVERY_SEC):
            try:
                reap_once(
                    _engine(),
                    hold_sec=max(settings.job_lease_sec, settings.job_resend_sec),
                    unclaimed_after_sec=settings.job_resend_sec,
                )
            except Exception:
                logger.exception("the reaper failed; trying again")

    thread = threading.Thread(target=loop, name="job-reaper", daemon=True)
    thread.start()
    return thread
