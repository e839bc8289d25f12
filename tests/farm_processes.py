"""Real `tunefarm worker` processes on a real Redis, for the farm and the API tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis


def empty_redis(url: str) -> str:
    """Flush the Redis database at ``url`` (the test's own number) and return the URL."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except redis.RedisError as err:
        pytest.fail(f"Redis at {url} is not usable: {err}")
    finally:
        client.close()
    return url


class WorkerProcess:
    def __init__(self, process: subprocess.Popen[str], log: Path) -> None:
        self.process = process
        self.log = log

    @property
    def name(self) -> str:
        return f"measure-{self.process.pid}@"

    def kill(self) -> None:
        """kill -9, as a crashed host would."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"worker did not start:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


StartWorker = Callable[..., WorkerProcess]


def spawn_worker(
    log: Path,
    broker_url: str,
    *extra: str,
    timeout_sec: float = 60.0,
    env: dict[str, str] | None = None,
) -> WorkerProcess:
    """Start `tunefarm worker --target llvm EXTRA...` and wait until Celery says it is ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tunefarm", "worker", "--target", "llvm", *extra],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "TUNEFARM_BROKER_URL": broker_url,
            "TUNEFARM_MEASURE_TIMEOUT_SEC": str(timeout_sec),
            **(env or {}),
        },
        text=True,
    )
    worker = WorkerProcess(process, log)
    try:
        worker.wait_ready()
    except AssertionError:
        worker.stop()
        raise
    return worker
