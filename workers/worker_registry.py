"""Measure workers say, in Redis, which queue they serve and how many processes they measure
with; the coordinator sizes its chunks from that, and the dashboard shows it with the batches
each worker is measuring (``working_on``, ``live_workers``).

A worker with K pool processes takes up to K chunks at once (Celery's threads pool; the solo
pool, one chunk at a time, when K is 1). With the workers' capacities known, a batch is cut into
one chunk per pool process of the queue, so it fans out over all of them at once: a 15-process
GPU worker gets 13 chunks of 5 for a batch of 64, two 1-process CPU workers one chunk of 32 each.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

ADVERTISE_EVERY_SEC = 5.0
ADVERTISEMENT_TTL_SEC = 20
_PREFIX = "tunefarm:measure-workers"
_BUSY_PREFIX = "tunefarm:measure-busy"
BUSY_TTL_SEC = 3600
"""A worker killed mid-batch leaves its entry; it goes after this long."""


@functools.lru_cache(maxsize=8)
def _client(broker_url: str) -> Any:
    """One client (and connection pool) per broker: a measure worker asks for it per batch."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return None
    import redis

    return redis.Redis.from_url(broker_url, socket_timeout=2)


def advertise(broker_url: str, queue: str, name: str, concurrency: int) -> threading.Event:
    """Keep ``name``'s entry alive while the worker runs; set the returned event to stop."""
    stop = threading.Event()
    client = _client(broker_url)
    if client is None:
        return stop
    key = f"{_PREFIX}:{queue}:{name}"

    def loop() -> None:
        while True:
            try:
                client.set(key, concurrency, ex=ADVERTISEMENT_TTL_SEC)
            except Exception:  # the broker is away for a moment
                pass
            if stop.wait(ADVERTISE_EVERY_SEC):
                break
        try:
            client.delete(key)
        except Exception:
            pass

    threading.Thread(target=loop, name="advertise-capacity", daemon=True).start()
    return stop


class QueueCapacity:
    """The live measure workers of a queue and their processes, read at most once a second."""

    def __init__(self, broker_url: str, queue: str) -> None:
        self.queue = queue
        self._client = _client(broker_url)
        self._read_at = 0.0
        self._capacities: list[int] = []

    def capacities(self) -> list[int]:
        now = time.monotonic()
        if self._client is not None and now - self._read_at >= 1.0:
            self._read_at = now
            try:
                keys = list(self._client.scan_iter(f"{_PREFIX}:{self.queue}:*", count=100))
                values = self._client.mget(keys) if keys else []
                self._capacities = [int(value) for value in values if value is not None]
            except Exception:
                pass  # keep the last reading
        return self._capacities

    def chunk_size(self, batch: int, *, fallback: int) -> int:
        """One chunk per pool process of the queue's live workers."""
        capacities = self.capacities()
        if not capacities:
            return fallback
        return max(1, math.ceil(batch / max(1, sum(capacities))))


@dataclass(frozen=True)
class Batch:
    candidates: int
    since: float
    """Unix time the batch started."""


@dataclass(frozen=True)
class LiveWorker:
    queue: str
    name: str
    concurrency: int
    batches: list[Batch] = field(default_factory=list)


@contextmanager
def working_on(broker_url: str, queue: str, name: str, *, candidates: int) -> Iterator[None]:
    """While the block runs, the worker's entry says it measures a batch of ``candidates``."""
    client = _client(broker_url)
    key = f"{_BUSY_PREFIX}:{queue}:{name}"
    batch_id = uuid.uuid4().hex
    if client is not None:
        try:
            client.hset(key, batch_id, json.dumps({"candidates": candidates, "since": time.time()}))
            client.expire(key, BUSY_TTL_SEC)
        except Exception:  # what the dashboard shows must never fail a measurement
            client = None
    try:
        yield
    finally:
        if client is not None:
            try:
                client.hdel(key, batch_id)
            except Exception:
                pass


def live_workers(broker_url: str) -> list[LiveWorker]:
    """Every measure worker whose advertisement is alive, with the batches it is measuring."""
    client = _client(broker_url)
    if client is None:
        return []
    keys = sorted(key.decode() for key in client.scan_iter(f"{_PREFIX}:*", count=100))
    values = client.mget(keys) if keys else []
    live = [
        (*key[len(_PREFIX) + 1 :].split(":", 1), int(value))
        for key, value in zip(keys, values, strict=True)
        if value is not None  # else it expired between the scan and the read
    ]
    pipeline = client.pipeline(transaction=False)
    for queue, name, _concurrency in live:
        pipeline.hgetall(f"{_BUSY_PREFIX}:{queue}:{name}")
    workers = []
    for (queue, name, concurrency), busy in zip(live, pipeline.execute(), strict=True):
        batches = []
        for raw in busy.values():
            try:
                entry = json.loads(raw)
                batches.append(Batch(int(entry["candidates"]), float(entry["since"])))
            except (ValueError, KeyError, TypeError):
                continue
        workers.append(LiveWorker(queue, name, concurrency, sorted(batches, key=lambda b: b.since)))
    return workers
