"""Trials on the farm: batches go to the target's measure queue, replies become results.

Each batch of candidates from MetaSchedule is cut into chunks, one Celery task each, so several
workers share it: by default one chunk per pool process of the queue's live workers
(``worker_registry.py``).
A chunk that no worker takes within ``queue_timeout_sec``, or that a worker holds for longer
than its candidates' timeouts allow (the worker died), is sent once more; after that its
candidates come back as errors. So does a chunk the broker lost in a restart. The search never
waits forever.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from typing import Any

from celery import Celery
from celery.result import AsyncResult
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from tunefarm.tuner.time_split import TrialTimes
from tunefarm.tuner.trial import TrialRequest, TrialResult
from tunefarm.tuner.trial_executor import TrialHandle
from tunefarm.workers.measure_tasks import MEASURE_TASK, batch_payload
from tunefarm.workers.worker_registry import QueueCapacity

POLL_SEC = 0.02
BROKER_ERRORS: tuple[type[Exception], ...] = (OperationalError, RedisError, OSError)


class CeleryTrialExecutor:
    """A ``TrialExecutor`` whose trials run on the measure workers of ``queue``."""

    def __init__(
        self,
        app: Celery,
        queue: str,
        *,
        chunk_size: int | None = None,
        timeout_sec: float = 60.0,
        queue_timeout_sec: float = 600.0,
        silence_slack_sec: float = 30.0,
        broker_outage_sec: float = 60.0,
    ) -> None:
        self.app = app
        self.queue = queue
        self.chunk_size = chunk_size
        """Candidates per Celery task; None sizes chunks from the workers' advertised capacity."""
        self._capacity = QueueCapacity(app.conf.broker_url, queue)
        self.timeout_sec = timeout_sec
        self.queue_timeout_sec = queue_timeout_sec
        self.silence_slack_sec = silence_slack_sec
        self.broker_outage_sec = broker_outage_sec
        """How long to wait for the broker to come back before a batch counts as failed."""
        self._epoch = BrokerEpoch(app.conf.broker_url)
        """Beyond its candidates' timeouts, how long a started chunk may take before it is
        presumed lost with its worker and sent again."""
        self.resent = 0
        self.measured_by: Counter[str] = Counter()
        self.trial_times = TrialTimes()
        """Queueing, build, run and device wait, summed over the trials that came back."""
        self.stopped: str | None = None
        """Set by ``stop``: no more sends, and waiting trials come back with this error."""
        self.unserved: str | None = None
        """Set when a batch waited ``queue_timeout_sec`` untaken and no worker had ever
        measured anything for this executor: no one serves the queue, and the job must fail
        saying so (issue 19) rather than build from nothing."""

    def stop(self, reason: str) -> None:
        """Stop sending and waiting (the job was cancelled or lost its lease)."""
        self.stopped = reason

    def parallel_trials(self) -> int | None:
        """The pool processes of the queue's live measure workers, as they advertise them."""
        return sum(self._capacity.capacities()) or None

    def submit(self, requests: list[TrialRequest]) -> list[TrialHandle]:
        handles: list[TrialHandle] = []
        size = self.chunk_size or self._capacity.chunk_size(len(requests), fallback=4)
        chunk_count = max(1, math.ceil(len(requests) / size))
        for index in range(chunk_count):
            chunk = _Chunk(self, requests[index * size : (index + 1) * size])
            handles += [_ChunkMember(chunk, position) for position in range(len(chunk.requests))]
        return handles

    def send(self, requests: list[TrialRequest]) -> AsyncResult:
        return self.app.send_task(MEASURE_TASK, args=[batch_payload(requests)], queue=self.queue)

    def broker_epoch(self) -> str | None:
        return self._epoch.current()

    def queue_is_empty(self) -> bool:
        return self._epoch.queue_length(self.queue) == 0


class BrokerEpoch:
    """The Redis server's run id: a new one means it restarted and lost what it held.

    Celery's clients reconnect on their own, so a restart can pass without an error; a message
    that was waiting in the queue is simply gone and its result stays PENDING forever.
    """

    def __init__(self, url: str, *, every_sec: float = 1.0) -> None:
        self.url = url
        self.every_sec = every_sec
        self._client: Any = None
        self._checked = 0.0
        self._run_id: str | None = None
        self._lengths: dict[str, tuple[float, int | None]] = {}

    def current(self) -> str | None:
        now = time.monotonic()
        if now - self._checked < self.every_sec:
            return self._run_id
        self._checked = now
        client = self._redis()
        try:
            self._run_id = str(client.info("server").get("run_id")) if client else None
        except BROKER_ERRORS:
            self._run_id = None
        return self._run_id

    def queue_length(self, queue: str) -> int | None:
        """Messages waiting in ``queue`` (kombu keeps a Redis list per queue); None if unknown.

        Read at most once per ``every_sec``: the coordinator polls its chunks 50 times a second.
        """
        now = time.monotonic()
        read_at, length = self._lengths.get(queue, (0.0, None))
        if now - read_at < self.every_sec:
            return length
        client = self._redis()
        try:
            length = int(client.llen(queue)) if client else None
        except BROKER_ERRORS:
            length = None
        self._lengths[queue] = (now, length)
        return length

    def _redis(self) -> Any:
        if self._client is None and self.url.startswith(("redis://", "rediss://")):
            import redis

            self._client = redis.Redis.from_url(self.url, socket_timeout=2)
        return self._client


class _Chunk:
    def __init__(self, executor: CeleryTrialExecutor, requests: list[TrialRequest]) -> None:
        self.executor = executor
        self.requests = requests
        self.results: list[TrialResult] | None = None
        self._send()

    def _send(self) -> None:
        self.sent_at = time.monotonic()
        self.sent_unix = time.time()
        self.started_at: float | None = None
        self.async_result: AsyncResult | None = None
        self.send_error: str | None = None
        self.epoch = self.executor.broker_epoch()
        deadline = self.sent_at + self.executor.broker_outage_sec
        while self.executor.stopped is None:
            try:
                self.async_result = self.executor.send(self.requests)
                return
            except BROKER_ERRORS as err:  # the broker restarts: try again for a while
                self.send_error = f"cannot reach the broker: {type(err).__name__}: {err}"
                if time.monotonic() > deadline:
                    return
                time.sleep(1.0)

    def done(self) -> bool:
        if self.results is not None or self.executor.stopped is not None:
            return True
        try:
            return self.async_result is not None and self.async_result.ready()
        except BROKER_ERRORS:
            return False

    def wait(self) -> list[TrialResult]:
        if self.results is None:
            self.results = self._wait()
        return self.results

    def _wait(self) -> list[TrialResult]:
        for attempt in range(2):
            problem = self._poll_until_done()
            if problem is None:
                return self._collect()
            if attempt == 0 and self.executor.stopped is None:
                self.executor.resent += 1
                self._forget()
                self._send()
        return [TrialResult(None, problem) for _ in self.requests]

    def _poll_until_done(self) -> str | None:
        """None once the reply is in; otherwise why we gave up on this send."""
        if self.async_result is None:
            return self.executor.stopped or self.send_error or "not sent"
        # A worker hands all of a chunk's candidates to its pool at once, and each one's limit
        # counts from then (queueing included): the chunk is back within one limit, or two if
        # a crash made the pool restart. So a chunk's length does not stretch the wait.
        running_limit = 2 * self.executor.timeout_sec + self.executor.silence_slack_sec
        outage_since: float | None = None
        while True:
            if self.executor.stopped is not None:
                return self.executor.stopped
            now = time.monotonic()
            try:
                if self.async_result.ready():
                    return None
                state = self.async_result.state
            except BROKER_ERRORS as err:
                outage_since = outage_since or now
                if now - outage_since > self.executor.broker_outage_sec:
                    return f"lost the broker for {now - outage_since:.0f} s: {err}"
                time.sleep(0.5)
                continue
            epoch = self.executor.broker_epoch()
            restarted = epoch is not None and self.epoch is not None and epoch != self.epoch
            if state == "PENDING" and (outage_since is not None or restarted):
                # Redis came back empty: the queued message and any result are gone.
                return "the broker restarted and lost the batch"
            outage_since = None
            if self.started_at is None and state == "STARTED":
                self.started_at = now
            if (
                self.started_at is None
                and now - self.sent_at > self.executor.silence_slack_sec
                and self.executor.queue_is_empty()
            ):
                # Nothing waits in the queue, yet our chunk never started: a worker took it
                # and died before it began (its message sits unacknowledged for hours).
                return "a measure worker took the batch and was lost before starting it"
            if self.started_at is None and now - self.sent_at > self.executor.queue_timeout_sec:
                problem = (
                    f"no measure worker took the batch within {self.executor.queue_timeout_sec:.0f}"
                    f" s; is a worker running for queue {self.executor.queue!r}?"
                )
                if not self.executor.measured_by:
                    self.executor.unserved = problem
                    self.executor.stop(problem)
                return problem
            if self.started_at is not None and now - self.started_at > running_limit:
                return f"the measure worker went silent for {running_limit:.0f} s (lost?)"
            time.sleep(POLL_SEC)

    def _collect(self) -> list[TrialResult]:
        result = self.async_result
        assert result is not None
        try:
            if not result.successful():
                return [TrialResult(None, f"measure task failed: {result.result!r}")] * len(
                    self.requests
                )
            replies: list[dict[str, Any]] = result.result
            trials = [TrialResult(**reply) for reply in replies]
            self.executor.measured_by.update(trial.worker or "unknown" for trial in trials)
            for trial in trials:
                self.executor.trial_times.add(trial, sent_unix=self.sent_unix)
            return trials
        finally:
            self._forget()

    def _forget(self) -> None:
        if self.async_result is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                self.async_result.forget()


class _ChunkMember:
    def __init__(self, chunk: _Chunk, position: int) -> None:
        self.chunk = chunk
        self.position = position

    def done(self) -> bool:
        return self.chunk.done()

    def result(self) -> TrialResult:
        return self.chunk.wait()[self.position]
