"""Pool processes end with the process that started them (tuner/parent_death.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="prctl is Linux's")

ROOT = Path(__file__).resolve().parents[2]

# A parent that starts a spawn pool whose process asks to die with it, prints that process's
# pid, and waits to be killed.
PARENT = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from tunefarm.tuner.parent_death import end_with_parent

    if __name__ == "__main__":
        pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=end_with_parent,
            initargs=(os.getpid(),),
        )
        print(pool.submit(os.getpid).result(), flush=True)
        time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has died; its reaper is not ours
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_a_pool_process_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert child != parent.pid and _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the pool process outlived its killed parent"


def test_a_process_whose_parent_is_already_gone_ends_itself() -> None:
    # The parent died while the child was still importing: its pid is no longer the parent's.
    code = "from tunefarm.tuner.parent_death import end_with_parent; end_with_parent(1 << 30)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60)
    assert done.returncode == 1
    still_here = code.replace("(1 << 30)", "(__import__('os').getppid())")
    assert subprocess.run([sys.executable, "-c", still_here], cwd=ROOT, timeout=60).returncode == 0
