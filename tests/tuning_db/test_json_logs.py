"""Records move both ways between tunefarm and MetaSchedule's JSONDatabase."""

from __future__ import annotations

from pathlib import Path

import tvm
from tvm.s_tir.meta_schedule.database import JSONDatabase

from tests.tuning_db.workloads import matmul, record
from tuning_db import SqlDatabase
from tuning_db.json_logs import RECORD_FILE, WORKLOAD_FILE, export_json_logs, import_json_logs

LLVM = tvm.target.Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 2})


def test_export_is_read_by_tvm_and_import_restores_it(db_url: str, tmp_path: Path) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    mod = matmul()
    workload = database.commit_workload(mod)
    for factor, secs in [(2, [0.3]), (4, [0.1]), (8, [1e10])]:
        database.commit_tuning_record(record(mod, workload, LLVM, factor=factor, run_secs=secs))

    counts = export_json_logs(database.engine, tmp_path / "logs")
    assert (counts.workloads, counts.records) == (1, 3)

    # Plain TVM reads what we wrote.
    tvm_db = JSONDatabase(
        path_workload=str(tmp_path / "logs" / WORKLOAD_FILE),
        path_tuning_record=str(tmp_path / "logs" / RECORD_FILE),
        allow_missing=False,
    )
    assert len(tvm_db) == 3
    best = tvm_db.query_tuning_record(mod, LLVM, "main")
    assert best is not None and [float(s) for s in best.run_secs] == [0.1]

    # And we read what plain TVM wrote, into a fresh database, once only.
    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    imported = import_json_logs(fresh_url, tmp_path / "logs")
    assert (imported.workloads, imported.records) == (1, 3)
    import_json_logs(fresh_url, tmp_path / "logs")  # again: duplicates are skipped
    fresh = SqlDatabase(fresh_url, target=LLVM)
    assert len(fresh) == 3
    top = fresh.get_top_k(fresh.commit_workload(mod), 5)
    assert [float(r.run_secs[0]) for r in top] == [0.1, 0.3]


def test_import_from_a_folder_without_logs_says_so(tmp_path: Path) -> None:
    try:
        import_json_logs(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    except ValueError as err:
        assert WORKLOAD_FILE in str(err)
    else:
        raise AssertionError("importing an empty folder must fail")
