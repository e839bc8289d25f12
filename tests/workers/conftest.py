"""Real Redis and real `tunefarm worker` processes for the farm tests."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.farm_processes import StartWorker, WorkerProcess, empty_redis, spawn_worker

__all__ = ["RedisServer", "StartWorker", "WorkerProcess"]

# A Redis database of its own, emptied before each test; the machine's Redis at 127.0.0.1.
TEST_REDIS_URL = os.environ.get("TUNEFARM_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


@pytest.fixture
def broker_url() -> str:
    return empty_redis(TEST_REDIS_URL)


@pytest.fixture
def start_worker(broker_url: str, tmp_path: Path) -> Iterator[StartWorker]:
    workers: list[WorkerProcess] = []

    def start(
        *extra: str, timeout_sec: float = 60.0, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        log = tmp_path / f"worker-{len(workers)}.log"
        worker = spawn_worker(log, broker_url, *extra, timeout_sec=timeout_sec, env=env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def farm_db_url(postgres_url: str) -> str:
    """The farm's shared database: the machine's PostgreSQL, emptied."""
    from tests.conftest import _reset_postgres

    _reset_postgres(postgres_url)
    return postgres_url


class RedisServer:
    """A redis-server of the test's own, so a test can kill and restart it."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    import shutil
    import socket

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (Debian package redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = RedisServer(port, tmp_path)
    server.start()
    yield server
    server.kill()
