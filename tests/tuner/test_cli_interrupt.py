"""Ctrl-C during a local compile (issue 19): one line, exit 130, the records already measured
kept, and no worker left behind. It used to print a traceback per worker, then segfault."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil


def _records(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as connection:
            return int(connection.execute("select count(*) from tuning_records").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def test_ctrl_c_stops_the_compile_keeps_the_records_and_leaves_no_worker(
    tiny_cnn_path: Path, tmp_path: Path
) -> None:
    db = tmp_path / "tuning.db"
    command = [sys.executable, "-m", "tunefarm", "compile", str(tiny_cnn_path), "--trials", "2000"]
    compile_ = subprocess.Popen(
        [*command, "--db", f"sqlite:///{db}", "--out", str(tmp_path / "out"), "--no-baseline"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 300
        while _records(db) < 20 and time.monotonic() < deadline:
            assert compile_.poll() is None, compile_.stderr.read() if compile_.stderr else ""
            time.sleep(0.5)
        workers = psutil.Process(compile_.pid).children(recursive=True)
        assert workers
        os.killpg(compile_.pid, signal.SIGINT)  # what Ctrl-C does: the whole group
        _, stderr = compile_.communicate(timeout=120)
    finally:
        if compile_.poll() is None:
            os.killpg(compile_.pid, signal.SIGKILL)
    assert compile_.returncode == 130, stderr
    assert "Traceback" not in stderr and "Segfault" not in stderr, stderr
    assert len([line for line in stderr.splitlines() if line.strip()]) <= 2, stderr
    kept = _records(db)
    assert kept >= 20
    with sqlite3.connect(db) as connection:
        assert connection.execute("pragma integrity_check").fetchone()[0] == "ok"
    time.sleep(1)
    assert not [worker for worker in workers if worker.is_running() and worker.status() != "zombie"]
