"""Alembic environment: migrates the engine handed over in ``config.attributes["engine"]``."""

from alembic import context
from sqlalchemy import text

from tunefarm.tuning_db.schema import Base

# Any number for the advisory lock, as long as every tunefarm process uses the same one.
MIGRATION_LOCK_KEY = 0x7475_6E65

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        # Processes that start together on a fresh database (a coordinator, the API, a test)
        # would otherwise all create alembic_version at once; one waits for the other here.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    context.run_migrations()
