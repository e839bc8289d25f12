"""A pool of long-lived processes that imported TVM once and run trials.

Stock ``LocalBuilder`` starts a fresh process per batch, and each one spends seconds importing
TVM. Here every worker imports TVM when the pool starts and then serves trials until the pool
closes. A candidate that hangs or crashes its worker costs a restart of the pool, not the job.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from tunefarm.tuner.parent_death import end_with_parent
from tunefarm.tuner.pool_shutdown import MANAGER_JOIN_SEC, kill_pool
from tunefarm.tuner.trial import TrialRequest, TrialResult, run_trial, set_measure_lock, warm_up
from tunefarm.tuner.trial_executor import TrialHandle


def _initialize_worker(lock: Any, parent_pid: int) -> None:
    end_with_parent(parent_pid)
    set_measure_lock(lock)
    warm_up()


@contextlib.contextmanager
def _interrupts_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread while it spawns processes, which inherit the mask."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@contextlib.contextmanager
def _callers_main_left_out() -> Iterator[None]:
    """Spawn workers without running the caller's script in them.

    A spawned process imports the parent's ``__main__`` file first, so a script that calls
    ``tunefarm.compile`` at its top level, without ``if __name__ == "__main__":`` (as users of
    ``torch.compile`` write them), would compile again in every worker, and multiprocessing
    stops that with an error. The workers need nothing from the script: what they run lives in
    ``tuner``. So while they start, ``__main__`` does not say where it came from.
    """
    main = sys.modules.get("__main__")
    saved: dict[str, Any] = {
        name: main.__dict__[name]
        for name in ("__file__", "__spec__")
        if main and name in main.__dict__
    }
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__dict__["__spec__"] = None
        yield
    finally:
        if main is not None:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


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

    def __init__(self, workers: int, *, timeout_sec: float = 60.0) -> None:
        if workers < 1:
            raise ValueError("a warm pool needs at least one worker")
        self.workers = workers
        self.timeout_sec = timeout_sec
        """Longest one trial may take to build and run before its worker is killed."""
        # spawn, not fork: a forked child of a process that already ran TVM's thread pool
        # (or touched CUDA) can deadlock.
        self._context = multiprocessing.get_context("spawn")
        self._executor: ProcessPoolExecutor | None = None
        self.restarts = 0
        self.generation = 0
        """Counts executors: a failure seen on an old one must not restart the current one."""
        # A farm worker serves several chunks at once from threads that share this pool.
        self._lifecycle = threading.RLock()

    def start(self) -> None:
        with self._lifecycle:
            self._start()

    def _start(self) -> None:
        if self._executor is None:
            # A new lock per set of workers: a worker that died while timing still holds the old.
            lock = self._context.Lock()
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=self._context,
                initializer=_initialize_worker,
                initargs=(lock, os.getpid()),
            )
            # Start every worker now, so the first batch does not pay for the imports. The
            # workers start with Ctrl-C blocked (a signal mask survives fork and exec): the
            # terminal sends SIGINT to the whole process group, and only this process decides
            # what an interrupt means (issue 19: every worker printed a traceback, then the
            # compile died with a segfault).
            with _callers_main_left_out(), _interrupts_blocked():
                futures = [self._executor.submit(warm_up) for _ in range(self.workers)]
            for future in futures:
                future.result()

    def submit_one(self, request: TrialRequest) -> Future[TrialResult]:
        with self._lifecycle:
            self._start()
            assert self._executor is not None
            return self._executor.submit(run_trial, request)

    def submit(self, requests: list[TrialRequest]) -> list[TrialHandle]:
        return [_LocalTrial(self, request) for request in requests]

    def parallel_trials(self) -> int | None:
        return self.workers

    def restart(self, generation: int | None = None) -> None:
        """Kill every worker (one hangs or died) and start afresh on the next submit.

        With ``generation``, only if the current executor is still that one.
        """
        with self._lifecycle:
            self._restart(generation)

    def _restart(self, generation: int | None) -> threading.Thread | None:
        """The manager thread of the executor whose workers were killed, if one was."""
        if generation is not None and generation != self.generation:
            return None
        executor, self._executor = self._executor, None
        if executor is None:
            return None
        self.restarts += 1
        self.generation += 1
        return kill_pool(executor)

    def close(self) -> None:
        with self._lifecycle:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WarmPool:
        self.start()
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is KeyboardInterrupt:
            # Do not wait for the trials in flight (up to their timeout): the user asked to stop.
            with self._lifecycle:
                manager = self._restart(None)
            if manager is not None:
                # Joined here, it has closed its wakeup pipe before Python's exit handler
                # writes to it: Ctrl-C in CI sometimes ended with a traceback (pool_shutdown).
                manager.join(timeout=MANAGER_JOIN_SEC)
        self.close()


class _LocalTrial:
    """A trial in the warm pool, with its timeout and one retry after a pool restart."""

    def __init__(self, pool: WarmPool, request: TrialRequest) -> None:
        self._pool = pool
        self._request = request
        self._result: TrialResult | None = None
        self._send()

    def _send(self) -> None:
        with self._pool._lifecycle:  # the generation of the executor it really went to
            self._generation = self._pool.generation
            self._future = self._pool.submit_one(self._request)
        self._submitted = time.monotonic()

    def done(self) -> bool:
        return self._result is not None or self._future.done()

    def result(self) -> TrialResult:
        if self._result is None:
            self._result = self._wait()
        return self._result

    def _wait(self) -> TrialResult:
        timeout = self._pool.timeout_sec
        for attempt in range(2):
            remaining = max(0.0, timeout - (time.monotonic() - self._submitted))
            try:
                return self._future.result(timeout=remaining)
            except FutureTimeout:
                self._pool.restart(self._generation)
                return TrialResult(None, f"timed out after {timeout:.0f} s (build + run)")
            except (BrokenProcessPool, CancelledError):
                # This candidate, or another one, killed its worker, or a restart cancelled
                # it: try once more on a fresh pool.
                self._pool.restart(self._generation)
                if attempt == 1:
                    return TrialResult(None, "the measuring process died on this candidate")
                self._send()
        raise AssertionError("unreachable")
