"""SqlDatabase against what TVM's own database tests check, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pytest
import tvm
import tvm_ffi
from sqlalchemy import func, select, text

from tests.tuning_db.workloads import matmul, record
from tunefarm.tuning_db import SqlDatabase, workload_key
from tunefarm.tuning_db.schema import TuningRecordRow, WorkloadRow

LLVM = tvm.target.Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 2})
OTHER_LLVM = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})


def _count(database: SqlDatabase, table: type) -> int:
    with database.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_commit_workload_is_idempotent(db_url: str) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    mod = matmul()
    assert not database.has_workload(mod)
    first = database.commit_workload(mod)
    second = database.commit_workload(matmul())  # equal module, another object
    assert database.has_workload(mod)
    assert tvm_ffi.structural_equal(first.mod, second.mod)
    assert _count(database, WorkloadRow) == 1
    # A second process-level handle on the same database sees the same single workload.
    assert SqlDatabase(db_url, target=LLVM).has_workload(matmul())


def test_commit_tuning_record_is_idempotent(db_url: str) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    mod = matmul()
    workload = database.commit_workload(mod)
    for _ in range(3):  # a redelivered measurement
        database.commit_tuning_record(record(mod, workload, LLVM, factor=4, run_secs=[1.0]))
    assert _count(database, TuningRecordRow) == 1
    assert len(database) == 1


def test_get_top_k_sorted_by_mean_and_skips_failures(db_url: str) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    mod = matmul()
    workload = database.commit_workload(mod)
    runs = {2: [3.0, 3.0], 4: [1.0, 2.0], 8: [0.5, 0.7], 16: [1e10], 32: [2.0]}
    for factor, run_secs in runs.items():
        database.commit_tuning_record(record(mod, workload, LLVM, factor=factor, run_secs=run_secs))
    top = database.get_top_k(workload, 10)
    means = [sum(float(s) for s in r.run_secs) / len(r.run_secs) for r in top]
    assert means == pytest.approx([0.6, 1.5, 2.0, 3.0])  # sorted, the failed run left out
    assert len(database.get_top_k(workload, 2)) == 2
    assert database.get_top_k(workload, 0) == []
    with pytest.raises(ValueError):
        database.get_top_k(workload, -1)
    assert len(database) == 5  # failed runs are kept as data
    assert len(database.get_all_tuning_records()) == 5


def test_queries_are_filtered_by_target(db_url: str) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    mod = matmul()
    workload = database.commit_workload(mod)
    database.commit_tuning_record(record(mod, workload, LLVM, factor=4, run_secs=[1.0]))

    other = SqlDatabase(db_url, target=OTHER_LLVM)
    other_workload = other.commit_workload(mod)
    assert other.has_workload(mod)  # workloads are shared ...
    assert other.get_top_k(other_workload, 5) == []  # ... records are not
    assert other.query_tuning_record(mod, OTHER_LLVM, "main") is None
    assert len(other) == 0
    assert other.get_all_tuning_records() == []

    # Even the database opened for the other target answers for the target it is asked about.
    found = other.query_tuning_record(mod, LLVM, "main")
    assert found is not None
    assert [float(s) for s in found.run_secs] == [1.0]
    assert database.query_tuning_record(mod, LLVM, "main") is not None


def test_query_schedule_replays_the_best_trace(db_url: str) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    mod = matmul()
    workload = database.commit_workload(mod)
    database.commit_tuning_record(record(mod, workload, LLVM, factor=8, run_secs=[0.1]))
    database.commit_tuning_record(record(mod, workload, LLVM, factor=2, run_secs=[0.9]))
    schedule = database.query_schedule(mod, LLVM, "main")
    assert schedule is not None
    assert "factors=[None, 8]" in str(schedule.trace)


def test_top_k_reads_the_index(db_url: str) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    mod = matmul()
    workload = database.commit_workload(mod)
    database.commit_tuning_record(record(mod, workload, LLVM, factor=4, run_secs=[1.0]))
    query = (
        "SELECT id FROM tuning_records WHERE workload_id = 1 AND target_key = 'x' "
        "AND mean_run_sec IS NOT NULL AND verified ORDER BY mean_run_sec LIMIT 5"
    )
    with database.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            plan = " ".join(
                str(row) for row in connection.execute(text(f"EXPLAIN QUERY PLAN {query}"))
            )
            assert "ix_tuning_records_top_k" in plan
            assert "TEMP B-TREE" not in plan  # ordered by the index, not sorted afterwards
        else:
            connection.execute(text("SET enable_seqscan = off"))
            plan = " ".join(str(row) for row in connection.execute(text(f"EXPLAIN {query}")))
            assert "ix_tuning_records_top_k" in plan


def test_workload_key_ignores_parameter_names() -> None:
    assert workload_key(matmul(names=("A", "B", "C"))) == workload_key(
        matmul(names=("lhs", "rhs", "C"))  # the output names the block, so it stays
    )
    assert workload_key(matmul(32)) != workload_key(matmul(64))


def test_workload_key_is_the_same_in_another_process() -> None:
    here = workload_key(matmul())
    code = (
        "from tests.tuning_db.workloads import matmul; from tuning_db import workload_key; "
        "print(workload_key(matmul()))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert there == here


def test_a_claimed_run_time_is_never_returned_until_a_worker_measures_it(db_url: str) -> None:
    from tunefarm.tuning_db.schema import TeamRow

    database = SqlDatabase(db_url, target=LLVM)
    with database.engine.begin() as connection:
        team_id = connection.execute(
            TeamRow.__table__.insert().values(name="b", created_at=_now()).returning(TeamRow.id)
        ).scalar_one()
    mod = matmul()
    workload = database.commit_workload(mod)
    database.commit_tuning_record(record(mod, workload, LLVM, factor=4, run_secs=[1e-3]))
    claim = record(mod, workload, LLVM, factor=8, run_secs=[1e-9])  # "1 ns"
    assert database.commit_claimed_record(claim, team_id=team_id)
    assert not database.commit_claimed_record(claim, team_id=team_id)  # no second row

    assert [float(r.run_secs[0]) for r in database.get_top_k(workload, 10)] == [1e-3]
    best = database.query_tuning_record(mod, LLVM, "main")
    assert best is not None and float(best.run_secs[0]) == 1e-3
    assert database.best_run_sec(mod) == 1e-3
    assert len(database.get_all_tuning_records()) == 1
    assert len(database.unverified_records(mod)) == 1

    # A worker measures the claimed schedule: its time replaces the claim.
    database.commit_tuning_record(record(mod, workload, LLVM, factor=8, run_secs=[2e-3]))
    assert database.unverified_records(mod) == []
    means = sorted(float(r.run_secs[0]) for r in database.get_top_k(workload, 10))
    assert means == [1e-3, 2e-3]
    assert _count(database, TuningRecordRow) == 2


def _now() -> datetime:
    return datetime.now(timezone.utc)
