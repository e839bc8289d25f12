"""``tunefarm worker``: a measure worker for one target's queue, or a coordinator for jobs.

It keeps a warm pool of build-and-time processes that imported TVM once; a candidate that
crashes or hangs kills a pool process, never the worker. For a GPU, ``--device N`` pins the
worker to that GPU before any CUDA work starts.

With one pool process, Celery's solo pool takes one chunk at a time. With K of them, Celery's
threads pool takes up to K chunks at once, so the chunks of a batch (and the next batch, which
the coordinator sends while this one is measured) fan out over every pool process. Threads, not
forked processes: the Celery process itself never touches CUDA, only the spawned pool processes
do, and they still time one candidate at a time per device.
"""

from __future__ import annotations

import os
import socket

from tunefarm.tuner.targets import parse_target
from tunefarm.workers import worker_state
from tunefarm.workers.celery_app import app
from tunefarm.workers.queues import measure_queue
from tunefarm.workers.worker_registry import advertise


def run_measure_worker(
    target_text: str,
    *,
    device: int | None,
    concurrency: int,
    timeout_sec: float,
    loglevel: str = "INFO",
) -> None:
    target = parse_target(target_text)
    if device is not None:
        # Spawned pool processes inherit it: each sees only its GPU, as device 0.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    queue = measure_queue(target)
    name = f"measure-{os.getpid()}@{socket.gethostname()}"
    worker_state.configure(concurrency=concurrency, timeout_sec=timeout_sec, name=name, queue=queue)
    stop_advertising = advertise(app.conf.broker_url, queue, name, concurrency)
    pool = (
        ["--pool=solo"] if concurrency == 1 else ["--pool=threads", f"--concurrency={concurrency}"]
    )
    try:
        app.worker_main(
            [
                "worker",
                *pool,
                f"--queues={queue}",
                f"--hostname={name}",
                f"--loglevel={loglevel}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        stop_advertising.set()


def run_coordinator_worker(*, loglevel: str = "INFO") -> None:
    """One job at a time (solo pool), plus the reaper that resumes abandoned jobs."""
    import threading

    from tunefarm.workers.job_tasks import coordinator_name, start_reaper
    from tunefarm.workers.queues import JOBS_QUEUE

    _check_database()
    stop = threading.Event()
    start_reaper(stop)
    try:
        app.worker_main(
            [
                "worker",
                "--pool=solo",
                f"--queues={JOBS_QUEUE}",
                f"--hostname={coordinator_name()}",
                f"--loglevel={loglevel}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        stop.set()


def _check_database() -> None:
    """A coordinator without its database would only log a traceback every few seconds: say
    so once, as the user's to fix, before it takes any job."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from tunefarm.tuner.errors import UserInputError
    from tunefarm.tuner.settings import Settings
    from tunefarm.tuning_db.engine import DatabaseUrlError
    from tunefarm.tuning_db.sql_database import open_engine

    url = Settings().resolved_database_url()
    try:
        with open_engine(url).connect():
            pass
    except DatabaseUrlError as err:
        raise UserInputError(str(err)) from None
    except SQLAlchemyError as err:
        shown = make_url(url).render_as_string(hide_password=True)
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise UserInputError(
            f"the farm's database {shown} cannot be reached ({reason}); check TUNEFARM_DATABASE_URL"
        ) from None
