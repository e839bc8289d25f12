"""A real `tunefarm serve` (uvicorn) with one measure worker and one coordinator, on the
machine's Redis and PostgreSQL, and two teams: the farm the HTTP and browser tests share.

Import the ``farm`` fixture into a test module; each module that does starts its own farm.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import API_REDIS_URL
from tests.conftest import _reset_postgres
from tests.farm_processes import WorkerProcess, empty_redis, spawn_worker


@dataclass
class Farm:
    url: str
    env: dict[str, str]
    db_url: str
    tokens: dict[str, str]

    def client(self, team: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.tokens[team]}"},
            timeout=httpx.Timeout(120.0),
        )

    def cli(
        self, *args: str, team: str = "a", timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tunefarm", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={
                **os.environ,
                **self.env,
                "TUNEFARM_API_URL": self.url,
                "TUNEFARM_API_TOKEN": self.tokens.get(team, ""),
            },
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_api(url: str, server: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"the API did not start:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def farm(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    _reset_postgres(postgres_url)
    broker = empty_redis(API_REDIS_URL)
    folder = tmp_path_factory.mktemp("farm")
    port = _free_port()
    env = {
        "TUNEFARM_BROKER_URL": broker,
        "TUNEFARM_DATABASE_URL": postgres_url,
        "TUNEFARM_DATA_DIR": str(folder / "data"),
        "TUNEFARM_API_PORT": str(port),
        "TUNEFARM_API_EVENTS_POLL_SEC": "0.2",
    }
    workers: list[WorkerProcess] = []
    server = None
    try:
        workers.append(spawn_worker(folder / "measure.log", broker, env=env))
        workers.append(spawn_worker(folder / "coordinator.log", broker, "--jobs", env=env))
        log = folder / "api.log"
        server = subprocess.Popen(
            [sys.executable, "-m", "tunefarm", "serve"],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        _wait_for_api(url, server, log)
        farm = Farm(url=url, env=env, db_url=postgres_url, tokens={})
        for team in ("a", "b"):
            created = farm.cli("admin", "create-team", f"team-{team}")
            assert created.returncode == 0, created.stderr
            assert "shown once" in created.stderr
            farm.tokens[team] = created.stdout.strip()
        yield farm
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        for worker in workers:
            worker.stop()
