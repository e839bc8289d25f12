"""Help read through a pipe (issue 19: it was cut at 80 columns, long words ending in "…")."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

COMMANDS = [
    [],
    ["compile"],
    ["plan"],
    ["sample-model"],
    ["records", "import"],
    ["worker"],
    ["serve"],
    ["jobs", "list"],
    ["admin", "create-team"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_piped_help_is_whole(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    shown = subprocess.run(
        [sys.executable, "-m", "tunefarm", *command, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "Usage:" in shown.stdout
    assert "…" not in shown.stdout, shown.stdout


def test_help_keeps_square_brackets_that_name_an_extra() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "tunefarm", "compile", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "tunefarm[vendor]" in shown.stdout
