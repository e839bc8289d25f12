"""What one measure worker process keeps between tasks: its warm pool."""

from __future__ import annotations

import socket
from dataclasses import replace

from tunefarm.tuner.trial import TrialRequest, TrialResult
from tunefarm.tuner.warm_pool import WarmPool

_pool: WarmPool | None = None
_name: str = socket.gethostname()
_queue: str | None = None


def configure(*, concurrency: int, timeout_sec: float, name: str, queue: str | None = None) -> None:
    """Start the warm pool (before the worker takes any batch) and set the name results carry
    (and the queue the worker serves, for what the dashboard shows)."""
    global _pool, _name, _queue
    if _pool is not None:
        _pool.close()
    _pool = WarmPool(concurrency, timeout_sec=timeout_sec)
    _pool.start()
    _name = name
    _queue = queue


def identity() -> tuple[str | None, str]:
    """The queue this worker serves (None outside ``tunefarm worker``) and its name."""
    return _queue, _name


def measure_requests(requests: list[TrialRequest]) -> list[TrialResult]:
    global _pool
    if _pool is None:
        _pool = WarmPool(1)
    # Name the Celery worker, not the pool process, so the job can say who measured what.
    return [replace(handle.result(), worker=_name) for handle in _pool.submit(requests)]
