"""docker/compose.yaml, checked without a Docker engine: the services, their health checks, the
GPU reservation, and that every Dockerfile and command it names exists.

Where the `docker compose` plugin is installed, `docker compose config` validates it as well.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
SERVICES = {"api", "coordinator", "worker-cpu", "worker-gpu", "redis", "postgres"}


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def test_the_topology_is_complete_and_every_service_has_a_health_check() -> None:
    services = _compose()["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check["test"], f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_tunefarm_services_wait_for_healthy_redis_and_postgres() -> None:
    services = _compose()["services"]
    for name in ("api", "coordinator", "worker-cpu", "worker-gpu"):
        depends = services[name]["depends_on"]
        assert depends == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }, name
        env = services[name]["environment"]
        assert env["TUNEFARM_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["TUNEFARM_DATABASE_URL"].split("@")[1].startswith("postgres:5432/")
        assert env["TUNEFARM_BROKER_URL"] == "redis://redis:6379/0"


def test_the_gpu_worker_reserves_a_gpu_and_the_cpu_worker_does_not() -> None:
    services = _compose()["services"]
    (device,) = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1
    assert device["capabilities"] == ["gpu"]
    assert "deploy" not in services["worker-cpu"]
    assert services["worker-gpu"]["environment"]["TUNEFARM_WORKER_TARGET"].startswith("cuda")


def test_builds_name_dockerfiles_that_exist_and_install_the_project() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        if "build" not in service:
            assert ":" in service["image"], name  # a pinned major version
            continue
        build = service["build"]
        dockerfile = (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile.is_file(), dockerfile
        text = dockerfile.read_text()
        assert 'pip install --no-cache-dir ".[postgres]"' in text
        for package in ("tunefarm", "api", "tuner", "tuning_db", "workers"):
            assert re.search(rf"^COPY {package} ", text, re.MULTILINE), (dockerfile, package)


def test_the_commands_are_tunefarm_commands() -> None:
    from typer.main import get_command

    from tunefarm.cli.entry import app

    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    services = _compose()["services"]
    assert services["coordinator"]["command"][:3] == ["tunefarm", "worker", "--jobs"]
    for dockerfile in (ROOT / "docker").glob("Dockerfile.*"):
        for command in re.findall(r"tunefarm (\w[\w-]*)", dockerfile.read_text()):
            assert command in commands, (dockerfile.name, command)


def test_docker_compose_config_where_the_plugin_exists() -> None:
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run([docker, "compose", "version"], capture_output=True).returncode
    ):
        return  # no compose plugin on this machine: the structural checks above stand
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
