"""Stopping a ``ProcessPoolExecutor`` now, not after the calls in flight.

``shutdown(wait=False)`` leaves the workers running their calls, and its manager thread with
them. Here the workers are killed first, so that thread ends within milliseconds; the caller
gets it, to join where nothing of the pool may outlive it. ``shutdown`` itself cannot wait for
it afterwards: the first call lets go of the thread. A manager thread still running when Python
exits closes its wakeup pipe while the exit handler writes to it (Python 3.11), which prints a
"Bad file descriptor" traceback.
"""

from __future__ import annotations

import threading
from concurrent.futures import ProcessPoolExecutor

MANAGER_JOIN_SEC = 10.0
"""How long a caller waits for the manager thread of a killed pool; it needs milliseconds."""


def kill_pool(executor: ProcessPoolExecutor) -> threading.Thread | None:
    """Kill the executor's processes and shut it down; its manager thread, if it had one."""
    # Private attributes, read before shutdown clears them: the executor has no public way to
    # stop its processes or to wait for its thread once shut down.
    manager: threading.Thread | None = getattr(executor, "_executor_manager_thread", None)
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        process.kill()
    executor.shutdown(wait=False, cancel_futures=True)
    return manager
