"""Issue 21: an import that would take the process down takes down a child instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tuner import bad_models
from tunefarm.tuner.errors import ModelValidationError
from tunefarm.tuner.import_guard import probe_import
from tunefarm.tuner.model_validation import validate_onnx_model

TUNEFARM = [sys.executable, "-m", "tunefarm"]


def test_a_model_that_imports_passes(tiny_cnn_path: Path) -> None:
    probe_import(validate_onnx_model(tiny_cnn_path), memory_bytes=2 * 1024**3, seconds=120)


def test_an_import_over_its_time_is_stopped(tiny_cnn_path: Path) -> None:
    with pytest.raises(ModelValidationError, match=r"took more than 0\.001 s"):
        probe_import(validate_onnx_model(tiny_cnn_path), memory_bytes=2 * 1024**3, seconds=0.001)


@pytest.mark.parametrize(
    ("how", "elements", "memory"),
    [
        ("ConstantOfShape", 2**30, "1073741824"),  # built by the importer: 4 GiB
        ("Tile", 2**34, None),  # built by the pipeline's constant folding: 64 GiB
    ],
)
def test_a_bomb_past_the_shape_check_is_one_line_and_exit_2(
    how: str, elements: int, memory: str | None, tmp_path: Path
) -> None:
    """With the size check off, the import itself meets the bomb: in the child, under its
    memory limit. Before, the compile grew to 23 GB (ConstantOfShape) or ended in an internal
    error with a crash log (Tile)."""
    model = bad_models.allocation_bomb(tmp_path, how=how, elements=elements)
    env = {**os.environ, "TUNEFARM_MAX_TENSOR_BYTES": str(2**50)}
    if memory is not None:
        env["TUNEFARM_IMPORT_MEMORY_BYTES"] = memory
    out, db = str(tmp_path / "out"), f"sqlite:///{tmp_path / 'tuning.db'}"
    result = subprocess.run(
        [*TUNEFARM, "compile", str(model), "--trials", "0", "--out", out, "--db", db],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout.strip() == ""  # none of the frontend's printed IR
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "importing it needs more than" in lines[0]
    assert "TUNEFARM_IMPORT_MEMORY_BYTES" in lines[0]
