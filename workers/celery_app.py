"""The Celery app of the farm, configured by the rules in DESIGN.md ("Celery rules")."""

from __future__ import annotations

from celery import Celery

from tunefarm.tuner.settings import Settings

# Longer than any task: a measure batch is bounded by its candidates' timeouts (minutes), and
# an unacknowledged message comes back to the queue only after this long.
VISIBILITY_TIMEOUT_SEC = 6 * 3600


def create_app(broker_url: str) -> Celery:
    app = Celery(
        "tunefarm",
        broker=broker_url,
        backend=broker_url,
        include=["tunefarm.workers.measure_tasks", "tunefarm.workers.job_tasks"],
    )
    app.conf.update(
        # JSON only: a pickled message is refused before anything runs.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # A message is acknowledged after its task ran, and one whose worker died is requeued.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SEC},
        result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SEC},
        # The coordinator tells a queued batch from one a worker holds (and may have died with).
        task_track_started=True,
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_default_queue="jobs",
    )
    return app


app = create_app(Settings().broker_url)
