"""Alembic upgrade → check → downgrade on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from tunefarm.tuning_db.engine import make_engine
from tunefarm.tuning_db.migrate import downgrade, upgrade
from tunefarm.tuning_db.schema import Base

TABLES = {
    "workloads",
    "workload_signatures",
    "targets",
    "tuning_records",
    "jobs",
    "teams",
    "api_tokens",
    "models",
    "untuned_baselines",
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


def test_upgrade_to_0004_backfills_signatures_and_target_classes(db_url: str) -> None:
    import tvm
    from sqlalchemy import text

    from tests.tuning_db.workloads import conv2d
    from tunefarm.tuning_db.operator_signature import operator_signature
    from tunefarm.tuning_db.target_fingerprint import fingerprint
    from tunefarm.tuning_db.workload_key import workload_key

    engine = make_engine(db_url)
    upgrade(engine, "0003")
    mod = conv2d()
    h100 = fingerprint(tvm.target.Target("nvidia/nvidia-h100"))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO workloads (key, mod_json, created_at) VALUES (:k, :m, :t), "
                "(:broken_key, :broken, :t)"
            ),
            {
                "k": workload_key(mod),
                "m": tvm.ir.save_json(mod),
                "broken_key": "0" * 64,
                "broken": "not a module",
                "t": "2026-11-20 00:00:00",
            },
        )
        connection.execute(
            text(
                "INSERT INTO targets (key, target_json, fingerprint_json, created_at) "
                "VALUES (:k, :tj, :fj, :t)"
            ),
            {
                "k": h100.key,
                "tj": h100.target_json,
                "fj": h100.fingerprint_json,
                "t": "2026-11-20 00:00:00",
            },
        )
    upgrade(engine)
    with engine.connect() as connection:
        signatures = connection.execute(
            text(
                "SELECT w.key, s.family_key, s.kind FROM workload_signatures s "
                "JOIN workloads w ON w.id = s.workload_id ORDER BY w.id"
            )
        ).all()
        target = connection.execute(text("SELECT target_class, tvm_version FROM targets")).one()
    assert [(key, family, kind) for key, family, kind in signatures] == [
        (workload_key(mod), operator_signature(mod).family_key, "conv"),
        ("0" * 64, signatures[1][1], "other"),  # unreadable: a family of its own
    ]
    assert tuple(target) == ("cuda/sm_90a", tvm.__version__)
    engine.dispose()
