"""Trials on the farm: batches go to the target's measure queue, replies become results.

Each batch of candidates from MetaSchedule is cut into chunks, one Celery task each, so several
workers share it. A chunk that no worker takes within ``queue_timeout_sec``, or that a worker
holds for longer than its candidates' timeouts allow (the worker died), is sent once more; after
that its candidates come back as errors. MetaSchedule's search never waits forever.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from tuner.trial import TrialRequest, TrialResult
from tuner.trial_executor import TrialHandle
from workers.measure_tasks import MEASURE_TASK, batch_payload

POLL_SEC = 0.02


class CeleryTrialExecutor:
    """A ``TrialExecutor`` whose trials run on the measure workers of ``queue``."""

    def __init__(
        self,
        app: Celery,
        queue: str,
        *,
        chunk_size: int = 4,
        timeout_sec: float = 60.0,
        queue_timeout_sec: float = 600.0,
        silence_slack_sec: float = 30.0,
    ) -> None:
        self.app = app
        self.queue = queue
        self.chunk_size = chunk_size
        self.timeout_sec = timeout_sec
        self.queue_timeout_sec = queue_timeout_sec
        self.silence_slack_sec = silence_slack_sec
        """Beyond its candidates' timeouts, how long a started chunk may take before it is
        presumed lost with its worker and sent again."""
        self.resent = 0
        self.measured_by: Counter[str] = Counter()
        self.stopped: str | None = None
        """Set by ``stop``: no more sends, and waiting trials come back with this error."""

    def stop(self, reason: str) -> None:
        """Stop sending and waiting (the job was cancelled or lost its lease)."""
        self.stopped = reason

    def submit(self, requests: list[TrialRequest]) -> list[TrialHandle]:
        handles: list[TrialHandle] = []
        chunk_count = max(1, math.ceil(len(requests) / self.chunk_size))
        for index in range(chunk_count):
            chunk = _Chunk(self, requests[index * self.chunk_size : (index + 1) * self.chunk_size])
            handles += [_ChunkMember(chunk, position) for position in range(len(chunk.requests))]
        return handles

    def send(self, requests: list[TrialRequest]) -> AsyncResult:
        return self.app.send_task(MEASURE_TASK, args=[batch_payload(requests)], queue=self.queue)


class _Chunk:
    def __init__(self, executor: CeleryTrialExecutor, requests: list[TrialRequest]) -> None:
        self.executor = executor
        self.requests = requests
        self.results: list[TrialResult] | None = None
        self._send()

    def _send(self) -> None:
        self.sent_at = time.monotonic()
        self.started_at: float | None = None
        self.async_result: AsyncResult | None = None
        if self.executor.stopped is None:
            self.async_result = self.executor.send(self.requests)

    def done(self) -> bool:
        if self.results is not None or self.executor.stopped is not None:
            return True
        return self.async_result is not None and self.async_result.ready()

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
                if self.async_result is not None:
                    self.async_result.forget()
                self._send()
        return [TrialResult(None, problem) for _ in self.requests]

    def _poll_until_done(self) -> str | None:
        """None once the reply is in; otherwise why we gave up on this send."""
        # A worker times each candidate with the same limit as the local pool.
        running_limit = (
            self.executor.timeout_sec * len(self.requests) + self.executor.silence_slack_sec
        )
        while True:
            if self.executor.stopped is not None:
                return self.executor.stopped
            assert self.async_result is not None
            if self.async_result.ready():
                return None
            now = time.monotonic()
            if self.started_at is None and self.async_result.state == "STARTED":
                self.started_at = now
            if self.started_at is None and now - self.sent_at > self.executor.queue_timeout_sec:
                return (
                    f"no measure worker took the batch within {self.executor.queue_timeout_sec:.0f}"
                    f" s; is a worker running for queue {self.executor.queue!r}?"
                )
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
            return trials
        finally:
            result.forget()


class _ChunkMember:
    def __init__(self, chunk: _Chunk, position: int) -> None:
        self.chunk = chunk
        self.position = position

    def done(self) -> bool:
        return self.chunk.done()

    def result(self) -> TrialResult:
        return self.chunk.wait()[self.position]
