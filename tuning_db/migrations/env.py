"""Alembic environment: migrates the engine handed over in ``config.attributes["engine"]``."""

from alembic import context

from tuning_db.schema import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    context.run_migrations()
