"""Engines for the tuning database: SQLite by default, PostgreSQL when shared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class DatabaseUrlError(ValueError):
    """The database URL cannot be used."""


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise DatabaseUrlError(f"not a database URL: {url!r}") from err
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except ModuleNotFoundError as err:  # the dialect's driver is not installed
        package = DRIVER_PACKAGES.get(str(err.name), err.name)
        raise DatabaseUrlError(
            f"cannot use database URL {parsed!r}: its driver {err.name!r} is not installed "
            f"(pip install {package!r})"
        ) from err
    except Exception as err:  # an unknown dialect
        raise DatabaseUrlError(f"cannot use database URL {parsed!r}: {err}") from err


DRIVER_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary"}
"""The pip package of a driver module, where its name is not the module's."""


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (a second `tunefarm compile`) run while a tuner writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
