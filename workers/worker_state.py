"""What one measure worker process keeps between tasks: its warm pool."""

from __future__ import annotations

import socket
from dataclasses import replace

from tunefarm.tuner.trial import TrialRequest, TrialResult
from tunefarm.tuner.warm_pool import WarmPool

_pool: WarmPool | None = None
_name: str = socket.gethostname()


def configure(*, concurrency: int, timeout_sec: float, name: str) -> None:
    """Start the warm pool (before the worker takes any batch) and set the name results carry."""
    global _pool, _name
    if _pool is not None:
        _pool.close()
    _pool = WarmPool(concurrency, timeout_sec=timeout_sec)
    _pool.start()
    _name = name


def measure_requests(requests: list[TrialRequest]) -> list[TrialResult]:
    global _pool
    if _pool is None:
        _pool = WarmPool(1)
    # Name the Celery worker, not the pool process, so the job can say who measured what.
    return [replace(handle.result(), worker=_name) for handle in _pool.submit(requests)]
