"""INSERT ... ON CONFLICT DO NOTHING for the two dialects we run on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_ignoring_duplicates(
    connection: Connection, table: Table, values: dict[str, Any]
) -> None:
    """Insert ``values`` unless a unique constraint says the row is already there."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    else:
        raise NotImplementedError(f"tunefarm's tuning database does not support {dialect!r}")
    connection.execute(statement)
