"""The untuned baselines: stored once per key and read back as stored, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

import tvm
from sqlalchemy import delete

from tunefarm.tuning_db import SqlDatabase
from tunefarm.tuning_db.baseline_cache import (
    BaselineKey,
    StoredBaseline,
    find_baseline,
    store_baseline,
)
from tunefarm.tuning_db.schema import TargetRow

LLVM = tvm.target.Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 2})
OTHER_LLVM = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})

MEASURED_AT = datetime(2026, 12, 2, 10, 30, tzinfo=timezone.utc)


def _baseline(p50_ms: float, host: str = "box-a") -> StoredBaseline:
    return StoredBaseline(
        p50_ms=p50_ms,
        p90_ms=p50_ms * 1.1,
        p99_ms=p50_ms * 1.5,
        samples=7,
        calls_per_sample=3,
        budget_reached=True,
        measured_on=host,
        measured_at=MEASURED_AT,
    )


def test_a_stored_baseline_is_found_under_its_key_only(db_url: str) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    other = database.register_target(OTHER_LLVM)
    key = BaselineKey("a" * 64, database.target_fingerprint.key, "p" * 64)
    assert find_baseline(database.engine, key) is None

    store_baseline(database.engine, key, _baseline(12.5), pipeline_json='{"layout": "NCHW"}')

    assert find_baseline(database.engine, key) == _baseline(12.5)
    # Each part of the key tells baselines apart: another model, target, or pipeline.
    for miss in (
        BaselineKey("b" * 64, key.target_key, key.pipeline_key),
        BaselineKey(key.model_sha256, other.key, key.pipeline_key),
        BaselineKey(key.model_sha256, key.target_key, "q" * 64),
    ):
        assert find_baseline(database.engine, miss) is None


def test_the_first_baseline_stored_under_a_key_is_kept(db_url: str) -> None:
    # Two compiles of one model that race: the second's insert adds nothing and raises nothing.
    database = SqlDatabase(db_url, target=LLVM)
    key = BaselineKey("a" * 64, database.target_fingerprint.key, "p" * 64)
    store_baseline(database.engine, key, _baseline(12.5), pipeline_json="{}")
    store_baseline(database.engine, key, _baseline(99.0, host="box-b"), pipeline_json="{}")
    found = find_baseline(database.engine, key)
    assert found is not None
    assert (found.p50_ms, found.measured_on) == (12.5, "box-a")


def test_baselines_go_with_their_target(db_url: str) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    key = BaselineKey("a" * 64, database.target_fingerprint.key, "p" * 64)
    store_baseline(database.engine, key, _baseline(12.5), pipeline_json="{}")
    with database.engine.begin() as connection:
        connection.execute(delete(TargetRow).where(TargetRow.key == key.target_key))
    assert find_baseline(database.engine, key) is None
