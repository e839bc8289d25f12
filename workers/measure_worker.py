"""``tunefarm worker``: a long-lived measure worker for one target's queue.

It runs Celery's solo pool, so one batch at a time, and keeps a warm pool of build-and-time
processes that imported TVM once. A candidate that crashes or hangs kills a pool process, never
the worker. For a GPU, ``--device N`` pins the worker to that GPU before any CUDA work starts.
"""

from __future__ import annotations

import os
import socket

from tuner.targets import parse_target
from workers import worker_state
from workers.celery_app import app
from workers.queues import measure_queue


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
    worker_state.configure(concurrency=concurrency, timeout_sec=timeout_sec, name=name)
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            f"--queues={queue}",
            f"--hostname={name}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
