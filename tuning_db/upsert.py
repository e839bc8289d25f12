"""INSERT ... ON CONFLICT for the two dialects we run on."""

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


def insert_measured_records(
    connection: Connection, table: Table, rows: list[dict[str, Any]]
) -> None:
    """Insert measurements of schedules (a worker's, or an operator's import), verified.

    A redelivered measurement of a verified record adds nothing. An unverified record of the
    same schedule (a client's claim) takes the measured run time and becomes verified: the
    claim is discarded. All rows go in one statement, executed for each row.
    """
    if not rows:
        return
    rows = [{**values, "verified": True} for values in rows]
    dialect = connection.dialect.name
    insert: Any
    if dialect == "postgresql":
        insert = postgresql.insert(table)
    elif dialect == "sqlite":
        insert = sqlite.insert(table)
    else:
        raise NotImplementedError(f"tunefarm's tuning database does not support {dialect!r}")
    statement = insert.on_conflict_do_update(
        index_elements=["workload_id", "target_key", "trace_hash"],
        set_={
            "run_secs_json": insert.excluded.run_secs_json,
            "mean_run_sec": insert.excluded.mean_run_sec,
            "args_info_json": insert.excluded.args_info_json,
            "verified": True,
        },
        where=table.c.verified.is_(False),
    )
    connection.execute(statement, rows)
