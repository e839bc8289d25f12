"""Pool processes that end when the process that started them dies, even by ``kill -9``.

A ``ProcessPoolExecutor`` child blocks on its call queue, whose pipe it holds both ends of, so it
never sees its parent go: each worker or API server killed in the farm's chaos tests left its
spawned pool processes behind, for good.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys


def end_with_parent(parent_pid: int) -> None:
    """In a pool process: be killed when `parent_pid` (the pool's owner) dies.

    Linux only (prctl's parent-death signal). The parent may already have died while this process
    was starting (the imports take seconds), before the request was made; the check after it
    ends this process then.
    """
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        return
    if os.getppid() != parent_pid:
        os._exit(1)
