"""Shared fixtures: real SQLite files and a real PostgreSQL database per test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tunefarm.tuner.sample_models import write_sample

# The machine's PostgreSQL (trust auth). Each test session gets a database of its own.
POSTGRES_ADMIN_URL = os.environ.get(
    "TUNEFARM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"tunefarm_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as err:  # no silent skip: the suite promises to run on PostgreSQL
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not usable: {err}")
    url = make_url(POSTGRES_ADMIN_URL).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty tuning database: a SQLite file, then the machine's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tuning.db'}"
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    return url


@pytest.fixture(scope="session")
def tiny_cnn_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample("tiny-cnn", tmp_path_factory.mktemp("models") / "tiny_cnn.onnx")
