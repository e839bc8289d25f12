"""Run TVM's parallel loops on every physical core.

TVM's runtime sizes its thread pool from ``TVM_NUM_THREADS``, and without it, on x86, from
half the logical CPUs: it assumes two hyper-threads per core. On a machine without SMT (this
2-core VM: 2 logical CPUs, 2 cores) that is one thread, and every parallel loop of a library,
of a trial and of the manifest's timing ran on one core: a 3x3 conv at 102 GFLOP/s instead of
212 (bench/README.md, cpu_peers). The pool reads the variable once, when the first parallel
loop runs, so it is set before TVM runs anything, and spawned processes inherit it.
"""

from __future__ import annotations

import os

THREADS_VARIABLE = "TVM_NUM_THREADS"


def physical_cores() -> int:
    """Physical cores (MetaSchedule's ``num-cores`` counts the same); hyper-threads are not."""
    try:
        import psutil

        count = psutil.cpu_count(logical=False)
        if count:
            return int(count)
    except ImportError:
        pass
    return os.cpu_count() or 1


def search_threads() -> int:
    """Threads for the search and the cost model: the physical cores this process may run on.

    A coordinator pinned to a few cores (``taskset``) beside its measure workers searches on
    those, instead of spreading as many threads as the host has over them.
    """
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return physical_cores()
    return max(1, min(physical_cores(), allowed))


def use_physical_cores() -> int:
    """Size TVM's thread pool to the physical cores, unless the user chose; return the size."""
    chosen = os.environ.get(THREADS_VARIABLE)
    if chosen and chosen.isdigit() and int(chosen) > 0:
        return int(chosen)
    os.environ[THREADS_VARIABLE] = str(physical_cores())
    return physical_cores()
