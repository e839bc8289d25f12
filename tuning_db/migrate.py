"""Run the Alembic migrations of the tuning database from code (no alembic.ini needed)."""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


# Alembic keeps its running context in module globals: two threads migrating at once (a
# coordinator's task and its reaper, say) would trample each other.
_ALEMBIC_LOCK = threading.Lock()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """One migration at a time per database, across threads and processes.

    PostgreSQL takes an advisory lock in ``migrations/env.py``. A SQLite file gets a lock file
    beside it: processes that start together on a new file would each create the tables.
    """
    with _ALEMBIC_LOCK:
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate-lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    with _migration_lock(engine):
        command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    with _migration_lock(engine):
        command.downgrade(alembic_config(engine), revision)
