"""Bad input: one clear line on stderr, exit code 2, no traceback, the database untouched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tvm
from sqlalchemy import func, select

from tests.tuner import bad_models
from tests.tuning_db.workloads import matmul, record
from tunefarm.tuning_db import SqlDatabase
from tunefarm.tuning_db.schema import TargetRow, TuningRecordRow, WorkloadRow

TUNEFARM = [sys.executable, "-m", "tunefarm"]


def _snapshot(url: str) -> tuple[int, int, int]:
    database = SqlDatabase(url, target=tvm.target.Target({"kind": "llvm", "num-cores": 1}))
    with database.engine.connect() as connection:
        counts = tuple(
            int(connection.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (WorkloadRow, TargetRow, TuningRecordRow)
        )
    database.engine.dispose()
    return counts  # type: ignore[return-value]


@pytest.fixture
def filled_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'filled.db'}"
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    database = SqlDatabase(url, target=target)
    mod = matmul()
    database.commit_tuning_record(
        record(mod, database.commit_workload(mod), target, factor=4, run_secs=[1.0])
    )
    database.engine.dispose()
    return url


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TUNEFARM, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def _model(tiny_cnn_path: Path, folder: Path) -> Path:
    return Path(shutil.copy(tiny_cnn_path, folder / "model.onnx"))


CASES: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "not onnx": (lambda m, d: [str(bad_models.not_onnx(d))], "not an ONNX model"),
    "truncated": (lambda m, d: [str(bad_models.truncated(d))], "truncated"),
    "external data": (
        lambda m, d: [str(bad_models.external_data_outside(d))],
        "outside the model's folder",
    ),
    "unsupported op": (
        lambda m, d: [str(bad_models.unsupported_standard_operator(d))],
        "operator Celu (node 'the_node') is not supported",
    ),
    "unknown target": (
        lambda m, d: [str(_model(m, d)), "--target", "tpu -v=4"],
        "unknown target kind 'tpu'",
    ),
    "negative trials": (
        lambda m, d: [str(_model(m, d)), "--trials", "-3"],
        "--trials: Input should be greater than or equal to 0",
    ),
    "bad layout": (
        lambda m, d: [str(_model(m, d)), "--layout", "NWHC"],
        "--layout: Input should be",
    ),
    # Issue 19, the first hour's traps.
    "a folder as the model": (lambda m, d: [str(d)], "a folder, not a model file"),
    "a .json file as the model": (lambda m, d: [str(_json_file(d))], "not an ONNX model"),
    "a misspelt CPU": (
        lambda m, d: [str(_model(m, d)), "--target", "llvm -mcpu=skylak"],
        "LLVM knows no CPU 'skylak' in 'llvm -mcpu=skylak'; did you mean skylake",
    ),
    # Issue 21: 23 GB and the OOM killer before; one line now, before TVM sees it.
    "an allocation bomb": (
        lambda m, d: [str(bad_models.allocation_bomb(d)), "--trials", "0"],
        "node 'bomb' (ConstantOfShape) would build a tensor of 4.0 GiB",
    ),
    # Issue 17: cuDNN and cuBLASLt are CUDA's.
    "vendor kernels on a CPU": (
        lambda m, d: [str(_model(m, d)), "--vendor-kernels"],
        "--vendor-kernels is for CUDA targets only",
    ),
}


def _json_file(folder: Path) -> Path:
    path = folder / "config.json"
    path.write_text('{"layers": 3}')
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    case: str, tmp_path: Path, tiny_cnn_path: Path, filled_db: str
) -> None:
    make_args, message = CASES[case]
    before = _snapshot(filled_db)
    out_dir = tmp_path / "out"
    args = make_args(tiny_cnn_path, tmp_path)
    result = _run("compile", *args, "--db", filled_db, "--out", str(out_dir), cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert _snapshot(filled_db) == before
    assert not (out_dir / "model.so").exists()


def test_bad_input_does_not_create_the_default_database(tmp_path: Path) -> None:
    env_db = tmp_path / "data"
    result = subprocess.run(
        [*TUNEFARM, "compile", str(bad_models.not_onnx(tmp_path))],
        capture_output=True,
        text=True,
        env={"TUNEFARM_DATA_DIR": str(env_db), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert result.returncode == 2
    assert not (env_db / "tunefarm.db").exists()


def test_a_database_url_that_cannot_work_is_a_user_error(
    tmp_path: Path, tiny_cnn_path: Path
) -> None:
    model = _model(tiny_cnn_path, tmp_path)
    result = _run("compile", str(model), "--db", "nosuchdialect://x/y", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot use database URL")


@pytest.mark.parametrize(
    ("variable", "value"), [("TUNEFARM_SEARCH_BATCH", "many"), ("TUNEFARM_SEARCH_IN_FLIGHT", "0")]
)
def test_a_bad_setting_names_its_variable(
    tiny_cnn_path: Path, tmp_path: Path, variable: str, value: str
) -> None:
    result = subprocess.run(
        [*TUNEFARM, "plan", str(tiny_cnn_path), "--db", f"sqlite:///{tmp_path / 'plan.db'}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, variable: value},
    )
    assert result.returncode == 2, result.stderr
    assert variable in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


@pytest.mark.skipif(tvm.cuda(0).exist, reason="this machine has a CUDA GPU")
def test_a_local_cuda_compile_without_a_gpu_is_refused_before_anything_is_filed(
    tmp_path: Path, tiny_cnn_path: Path, filled_db: str
) -> None:
    before = _snapshot(filled_db)
    result = _run(
        "compile",
        str(_model(tiny_cnn_path, tmp_path)),
        "--target",
        "cuda",
        "--db",
        filled_db,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "no CUDA device to measure on" in result.stderr and "--farm" in result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(filled_db) == before


def test_a_database_driver_that_is_not_installed_is_named_with_its_package(
    tmp_path: Path,
) -> None:
    # pg8000 is a PostgreSQL driver tunefarm does not install.
    url = "postgresql+pg8000://nobody@127.0.0.1:1/farm"
    for command in (["jobs", "list"], ["admin", "create-team", "team-a"]):
        result = subprocess.run(
            [*TUNEFARM, *command],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "TUNEFARM_DATABASE_URL": url},
            timeout=120,
        )
        assert result.returncode == 2, (command, result.stderr)
        assert "its driver 'pg8000' is not installed (pip install 'pg8000')" in result.stderr
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_a_coordinator_without_its_database_says_so_once_and_exits(tmp_path: Path) -> None:
    result = subprocess.run(
        [*TUNEFARM, "worker", "--jobs"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TUNEFARM_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/x"},
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert (
        "the farm's database postgresql+psycopg://nobody@127.0.0.1:1/x cannot be reached"
        in (lines[0])
    )
