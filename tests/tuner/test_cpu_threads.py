"""TVM's thread pool gets every physical core in tunefarm's processes, unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys

from tunefarm.tuner.cpu_threads import physical_cores

PROBE = (
    "from tunefarm.tuner.cpu_threads import use_physical_cores; use_physical_cores(); "
    "import tvm; print(tvm.get_global_func('runtime.NumThreads')())"
)


def _threads(env: dict[str, str]) -> int:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1])


def test_the_pool_gets_the_physical_cores() -> None:
    env = {key: value for key, value in os.environ.items() if key != "TVM_NUM_THREADS"}
    assert _threads(env) == physical_cores()


def test_a_users_choice_stays() -> None:
    assert _threads({**os.environ, "TVM_NUM_THREADS": "1"}) == 1


def test_a_pinned_process_searches_on_its_own_cores() -> None:
    probe = "from tunefarm.tuner.cpu_threads import search_threads; print(search_threads())"
    pinned = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pinned.returncode == 0, pinned.stderr
    assert int(pinned.stdout.strip()) == 1
    free = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert int(free.stdout.strip()) == min(physical_cores(), len(os.sched_getaffinity(0)))
