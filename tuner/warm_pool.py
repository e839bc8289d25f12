"""A pool of long-lived processes that imported TVM once and run trials.

Stock ``LocalBuilder`` starts a fresh process per batch, and each one spends seconds importing
TVM. Here every worker imports TVM when the pool starts and then serves trials until the pool
closes. A candidate that hangs or crashes its worker costs a restart of the pool, not the job.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from tuner.trial import TrialRequest, TrialResult, run_trial, set_measure_lock, warm_up


def _initialize_worker(lock: Any) -> None:
    set_measure_lock(lock)
    warm_up()


def default_worker_count(target_kind: str) -> int:
    """Workers for a local pool: builds run in parallel, timing runs one at a time.

    On a CPU target a candidate's timing uses every core, so a build beside it skews the
    reading; small machines get one worker.
    """
    cores = os.cpu_count() or 1
    if target_kind == "llvm":
        return max(1, min(4, cores // 4))
    return max(1, min(16, cores - 1))


class WarmPool:
    """Processes that import TVM once and run ``run_trial`` on request."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a warm pool needs at least one worker")
        self.workers = workers
        # spawn, not fork: a forked child of a process that already ran TVM's thread pool
        # (or touched CUDA) can deadlock.
        self._context = multiprocessing.get_context("spawn")
        self._lock = self._context.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self.restarts = 0
        self.generation = 0
        """Counts executors: a failure seen on an old one must not restart the current one."""

    def start(self) -> None:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=self._context,
                initializer=_initialize_worker,
                initargs=(self._lock,),
            )
            # Start every worker now, so the first batch does not pay for the imports.
            for future in [self._executor.submit(warm_up) for _ in range(self.workers)]:
                future.result()

    def submit(self, request: TrialRequest) -> Future[TrialResult]:
        self.start()
        assert self._executor is not None
        return self._executor.submit(run_trial, request)

    def restart(self, generation: int | None = None) -> None:
        """Kill every worker (one hangs or died) and start afresh on the next submit.

        With ``generation``, only if the current executor is still that one.
        """
        if generation is not None and generation != self.generation:
            return
        executor, self._executor = self._executor, None
        if executor is None:
            return
        self.restarts += 1
        self.generation += 1
        processes = list(getattr(executor, "_processes", {}).values())
        for process in processes:
            process.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WarmPool:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
