"""Real Redis and real `tunefarm worker` processes for the farm tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

# A Redis database of its own, emptied before each test; the machine's Redis at 127.0.0.1.
TEST_REDIS_URL = os.environ.get("TUNEFARM_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


@pytest.fixture
def broker_url() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.flushdb()
    except redis.RedisError as err:
        pytest.fail(f"Redis at {TEST_REDIS_URL} is not usable: {err}")
    return TEST_REDIS_URL


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


@pytest.fixture
def start_worker(broker_url: str, tmp_path: Path) -> Iterator[StartWorker]:
    workers: list[WorkerProcess] = []

    def start(
        *extra: str, timeout_sec: float = 60.0, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        log = tmp_path / f"worker-{len(workers)}.log"
        env = {
            **os.environ,
            "TUNEFARM_BROKER_URL": broker_url,
            "TUNEFARM_MEASURE_TIMEOUT_SEC": str(timeout_sec),
            **(env or {}),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "--target", "llvm", *extra],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        worker = WorkerProcess(process, log)
        workers.append(worker)
        worker.wait_ready()
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
