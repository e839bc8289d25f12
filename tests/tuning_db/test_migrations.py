"""Alembic upgrade → check → downgrade on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from tuning_db.engine import make_engine
from tuning_db.migrate import downgrade, upgrade
from tuning_db.schema import Base

TABLES = {
    "workloads",
    "workload_signatures",
    "targets",
    "tuning_records",
    "jobs",
    "teams",
    "api_tokens",
    "models",
}


def test_upgrade_matches_models_then_downgrade_removes_everything(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    assert TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "render_as_batch": True}
        )
        assert compare_metadata(context, Base.metadata) == []
    upgrade(engine)  # at head already: nothing to do, nothing breaks
    downgrade(engine)
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine)  # and back up again
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()


def _migrate(url: str) -> None:
    upgrade(make_engine(url))


def test_processes_that_migrate_a_fresh_database_at_once_all_succeed(db_url: str) -> None:
    # A coordinator, the API and a client often start together on an empty database.
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        pool.map(_migrate, [db_url] * 4)
    assert "jobs" in inspect(make_engine(db_url)).get_table_names()
