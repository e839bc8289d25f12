"""Records move both ways between tunefarm and MetaSchedule's JSONDatabase."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tvm
from sqlalchemy import insert
from tvm.s_tir.meta_schedule.database import JSONDatabase

from tests.tuning_db.workloads import matmul, record
from tunefarm.tuning_db import SqlDatabase
from tunefarm.tuning_db.json_logs import (
    RECORD_FILE,
    WORKLOAD_FILE,
    export_json_logs,
    import_json_logs,
)
from tunefarm.tuning_db.schema import TeamRow

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
    assert (imported.new_workloads, imported.new_records) == (1, 3)
    again = import_json_logs(fresh_url, tmp_path / "logs")  # duplicates are skipped
    assert (again.new_workloads, again.new_records) == (0, 0)
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


def test_records_exported_from_a_database_import_into_it_as_duplicates(
    db_url: str, tmp_path: Path
) -> None:
    # The import files a record as its JSON line says; a commit files the TuningRecord. Both
    # must give the same schedule the same trace hash, or a record would be filed twice.
    database = SqlDatabase(db_url, target=LLVM)
    mod = matmul()
    workload = database.commit_workload(mod)
    for factor, secs in [(2, [0.3]), (4, [0.1, 0.2])]:
        database.commit_tuning_record(record(mod, workload, LLVM, factor=factor, run_secs=secs))
    export_json_logs(database.engine, tmp_path / "logs")
    counts = import_json_logs(database.engine, tmp_path / "logs")
    assert (counts.workloads, counts.records) == (1, 2)
    assert len(database) == 2
    assert [float(r.run_secs[1]) for r in database.get_top_k(workload, 1)] == [0.2]


def test_an_import_verifies_a_claimed_record(db_url: str, tmp_path: Path) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    mod = matmul()
    workload = database.commit_workload(mod)
    measured = record(mod, workload, LLVM, factor=2, run_secs=[0.3])
    database.commit_tuning_record(measured)
    export_json_logs(database.engine, tmp_path / "logs")

    claimed_db_url = f"sqlite:///{tmp_path / 'claims.db'}"
    claims = SqlDatabase(claimed_db_url, target=LLVM)
    with claims.engine.begin() as connection:
        team_id = connection.execute(
            insert(TeamRow).values(name="acme").returning(TeamRow.id)
        ).scalar_one()
    claim = record(mod, claims.commit_workload(mod), LLVM, factor=2, run_secs=[1e-9])
    assert claims.commit_claimed_record(claim, team_id=team_id)
    assert claims.best_run_sec(mod) is None

    import_json_logs(claims.engine, tmp_path / "logs")
    assert claims.best_run_sec(mod) == pytest.approx(0.3)
    assert claims.unverified_records(mod) == []


def test_a_malformed_record_line_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    database = SqlDatabase(f"sqlite:///{tmp_path / 'db.sqlite'}", target=LLVM)
    mod = matmul()
    workload = database.commit_workload(mod)
    database.commit_tuning_record(record(mod, workload, LLVM, factor=2, run_secs=[0.3]))
    export_json_logs(database.engine, tmp_path / "logs")
    with (tmp_path / "logs" / RECORD_FILE).open("a") as out:
        out.write("[7, [[], [0.1], null, null]]\n")  # no workload 7

    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with pytest.raises(ValueError, match=f"line 2 of {RECORD_FILE}"):
        import_json_logs(fresh_url, tmp_path / "logs")
    assert len(SqlDatabase(fresh_url, target=LLVM)) == 0


PACKS = Path(__file__).resolve().parents[2] / "packs"


def test_a_tensor_core_pack_imports_without_tvm_tensor_intrinsics(tmp_path: Path) -> None:
    # Registering TVM's tensor intrinsics takes from 10 s to minutes; an import replays no
    # trace, so it never needs them. A fresh process shows what the import loaded.
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from tunefarm.tuning_db.json_logs import import_json_logs
        counts = import_json_logs(sys.argv[1], Path(sys.argv[2]))
        print(counts.records, "tvm.s_tir.tensor_intrin" in sys.modules)
        """
    )
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    result = subprocess.run(
        [sys.executable, "-c", script, url, str(PACKS / "resnet50-fp16-sm_90")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert result.stdout.split() == ["30", "False"]
