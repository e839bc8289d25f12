"""``tunefarm admin``: teams are made, listed with their token counts, and never show a token."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _admin(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunefarm", "admin", *args, "--db", db],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_list_teams_shows_each_team_and_its_token_count(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'farm.db'}"
    empty = _admin("list-teams", db=db)
    assert empty.returncode == 0 and empty.stdout == ""
    assert "no teams yet" in empty.stderr
    created = _admin("create-team", "vision", db=db)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert _admin("create-token", "vision", db=db).returncode == 0
    assert _admin("create-team", "speech", db=db).returncode == 0
    listed = _admin("list-teams", db=db)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["vision", "speech"]
    assert lines[0].endswith("2 tokens") and lines[1].endswith("1 token")
    assert token not in listed.stdout
