"""`tunefarm records export/import` through the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tvm

from tests.tuning_db.workloads import matmul, record
from tunefarm.tuning_db import SqlDatabase

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 2})


def _tunefarm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunefarm", *args], capture_output=True, text=True, timeout=300
    )


def test_export_then_import_into_another_database(tmp_path: Path) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    database = SqlDatabase(source_url, target=TARGET)
    mod = matmul()
    workload = database.commit_workload(mod)
    for factor, secs in [(2, [0.2]), (4, [0.1])]:
        database.commit_tuning_record(record(mod, workload, TARGET, factor=factor, run_secs=secs))

    exported = _tunefarm("records", "export", str(tmp_path / "logs"), "--db", source_url)
    assert exported.returncode == 0, exported.stderr
    assert "exported 1 workloads and 2 records" in exported.stdout

    target_url = f"sqlite:///{tmp_path / 'target.db'}"
    imported = _tunefarm("records", "import", str(tmp_path / "logs"), "--db", target_url)
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 new records of 2 and 1 new workloads of 1" in imported.stdout
    # Again: everything was there already, and the count says so (issue 19).
    again = _tunefarm("records", "import", str(tmp_path / "logs"), "--db", target_url)
    assert again.returncode == 0, again.stderr
    assert "imported 0 new records of 2 and 0 new workloads of 1" in again.stdout
    assert len(SqlDatabase(target_url, target=TARGET)) == 2


def test_import_of_a_folder_without_logs_is_a_clear_error(tmp_path: Path) -> None:
    result = _tunefarm("records", "import", str(tmp_path), "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "database_workload.json" in result.stderr
    assert "Traceback" not in result.stderr
