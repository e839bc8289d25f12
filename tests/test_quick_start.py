"""The quick start's `make demo` (issue 19): its records live in its own folder, so a clone's
first demo tunes whatever other checkouts filed, and `make clean` takes them away."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _recipe(target: str, demo_dir: Path) -> list[str]:
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, f"DEMO_DIR={demo_dir}", "VENV=/nonexistent"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.replace("\\\n", " ").splitlines()  # a recipe's continued lines


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
def test_the_demo_keeps_its_records_in_its_own_folder(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    (compile_line,) = [line for line in _recipe("demo", demo_dir) if " compile " in line]
    words = shlex.split(compile_line)
    assert words[words.index("--db") + 1] == f"sqlite:///{demo_dir}/tuning.db"
    assert any(str(demo_dir) in line for line in _recipe("clean", demo_dir) if "rm -rf" in line)
