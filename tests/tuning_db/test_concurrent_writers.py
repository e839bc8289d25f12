"""Many writers at once on the shared PostgreSQL: no record lost, none duplicated."""

from __future__ import annotations

import multiprocessing

import tvm
from sqlalchemy import func, select

from tests.tuning_db.workloads import matmul, record
from tunefarm.tuning_db import SqlDatabase
from tunefarm.tuning_db.schema import TuningRecordRow, WorkloadRow

TARGET_JSON = '{"kind": "llvm", "mcpu": "skylake", "num-cores": 2}'
FACTORS = [2, 4, 8, 16, 32]
SIZES = [16, 32, 64]


def _writer(url: str, seed: int) -> None:
    target = tvm.target.Target(TARGET_JSON)
    database = SqlDatabase(url, target=target)
    # Every writer commits the same records, in its own order, as redelivered results would.
    jobs = [(n, f) for n in SIZES for f in FACTORS]
    jobs = jobs[seed % len(jobs) :] + jobs[: seed % len(jobs)]
    for n, factor in jobs:
        mod = matmul(n)
        workload = database.commit_workload(mod)
        database.commit_tuning_record(
            record(mod, workload, target, factor=factor, run_secs=[n * 1e-6 * factor])
        )
    database.engine.dispose()


def test_many_writers_lose_nothing_and_duplicate_nothing(postgres_url: str) -> None:
    from tests.conftest import _reset_postgres

    _reset_postgres(postgres_url)
    SqlDatabase(postgres_url, target=tvm.target.Target(TARGET_JSON)).engine.dispose()
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(postgres_url, seed)) for seed in range(6)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=300)
        assert writer.exitcode == 0
    database = SqlDatabase(postgres_url, target=tvm.target.Target(TARGET_JSON))
    with database.engine.connect() as connection:
        workloads = connection.execute(select(func.count()).select_from(WorkloadRow)).scalar_one()
        records = connection.execute(select(func.count()).select_from(TuningRecordRow)).scalar_one()
    assert workloads == len(SIZES)
    assert records == len(SIZES) * len(FACTORS)
    for n in SIZES:
        top = database.get_top_k(database.commit_workload(matmul(n)), 10)
        assert len(top) == len(FACTORS)
