"""How much of a model the tuning database already covers for a target.

The tasks of a model are found the way a job finds them (import, pass pipeline, MetaSchedule's
task extraction), which takes seconds, in a child process (``ModelAnalyses``); they are kept
per (model, target, layout, fp16). Which tasks are covered is read from the database on every
call: only verified records count, as in a build.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from tunefarm.tuner.errors import ModelValidationError, UserInputError
from tunefarm.tuner.import_guard import confine, is_out_of_memory
from tunefarm.tuner.parent_death import end_with_parent
from tunefarm.tuner.pool_shutdown import MANAGER_JOIN_SEC, kill_pool
from tunefarm.tuner.settings import Settings
from tunefarm.tuner.targets import parse_target
from tunefarm.tuning_db.sql_database import best_verified_times
from tunefarm.tuning_db.target_fingerprint import fingerprint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelTask:
    name: str
    workload_key: str
    weight: int
    flops: float


@dataclass(frozen=True)
class ModelTasks:
    target_fingerprint: str
    tasks: tuple[ModelTask, ...]


class AnalysisPending(Exception):
    """The model's tasks are being found in a child process; ask again shortly."""


AnalysisKey = tuple[str, str, str, bool]
"""(model path, target, layout, fp16)."""


class ModelAnalyses:
    """Each model's tasks, found in a pool of child processes, never in the API process
    (issue 21): TVM's importer builds constant tensors in full, so a hostile model could take
    the process that imports it down, and a slow one held every team's request behind one lock.

    ``get`` never waits: it answers from the cache, or starts the analysis and raises
    ``AnalysisPending``. A child starts with an address-space limit (``import_memory_bytes``
    more than it maps once TVM is loaded) and its stdout and stderr silenced; an analysis that
    overruns ``import_timeout_sec`` has its process killed. A child that dies takes the pool
    with it; the pool is made anew, and an analysis that was in it is retried once, then
    reported as the model's failure.
    """

    def __init__(self, *, workers: int, memory_bytes: int, timeout_sec: float) -> None:
        self._workers = workers
        self._memory_bytes = memory_bytes
        self._timeout_sec = timeout_sec
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._running: dict[AnalysisKey, tuple[Future[ModelTasks], float]] = {}
        self._crashes: dict[AnalysisKey, int] = {}
        self._done: OrderedDict[AnalysisKey, ModelTasks | UserInputError] = OrderedDict()

    def get(self, key: AnalysisKey) -> ModelTasks:
        """The tasks; ``AnalysisPending`` while they are being found; the model's
        ``UserInputError`` if it cannot be analysed."""
        with self._lock:
            self._collect(key)
            if key in self._done:
                self._done.move_to_end(key)
                outcome = self._done[key]
                if isinstance(outcome, UserInputError):
                    raise outcome
                return outcome
            if key not in self._running:
                try:
                    future = self._ensure_pool().submit(_analyse, *key)
                except BrokenProcessPool:  # another analysis's child died; not yet collected
                    self._pool = None
                    future = self._ensure_pool().submit(_analyse, *key)
                self._running[key] = (future, time.monotonic())
        raise AnalysisPending("the model's tasks are being found; ask again in a few seconds")

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and (manager := kill_pool(pool)) is not None:
            # An analysis in flight is not waited for, and nothing of the pool outlives the
            # API's shutdown (pool_shutdown).
            manager.join(timeout=MANAGER_JOIN_SEC)

    def _collect(self, key: AnalysisKey) -> None:
        running = self._running.get(key)
        if running is None:
            return
        future, started = running
        if not future.done():
            if time.monotonic() - started > self._timeout_sec:
                self._finish(
                    key,
                    ModelValidationError(
                        f"finding the model's tasks took more than {self._timeout_sec:g} s "
                        "(TUNEFARM_IMPORT_TIMEOUT_SEC); it was stopped"
                    ),
                )
                self._kill_pool()
            return
        try:
            self._finish(key, future.result())
        except UserInputError as err:
            self._finish(key, err)
        except BrokenProcessPool:
            del self._running[key]
            self._pool = None  # its processes are gone; the next analysis makes a new one
            self._crashes[key] = self._crashes.get(key, 0) + 1
            if self._crashes[key] >= 2:
                self._finish(
                    key,
                    ModelValidationError(
                        "finding the model's tasks crashed its process twice, or needed more than "
                        f"{self._memory_bytes / 1024**3:.1f} GiB (TUNEFARM_IMPORT_MEMORY_BYTES)"
                    ),
                )
        except Exception as err:  # the tuner's own failure: say so, once, and keep serving
            logger.exception("the analysis of %s failed", key[0])
            self._finish(key, ModelValidationError(f"the model's tasks could not be found: {err}"))

    def _finish(self, key: AnalysisKey, outcome: ModelTasks | UserInputError) -> None:
        self._running.pop(key, None)
        self._crashes.pop(key, None)
        self._done[key] = outcome
        while len(self._done) > 256:
            self._done.popitem(last=False)

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_child,
                initargs=(self._memory_bytes, os.getpid()),
            )
        return self._pool

    def _kill_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            kill_pool(pool)


_analyses: ModelAnalyses | None = None
_analyses_lock = threading.Lock()


def model_analyses(settings: Settings) -> ModelAnalyses:
    """This process's ``ModelAnalyses`` (made on first use, with ``settings``' limits)."""
    global _analyses
    with _analyses_lock:
        if _analyses is None:
            _analyses = ModelAnalyses(
                workers=settings.api_analysis_workers,
                memory_bytes=settings.import_memory_bytes,
                timeout_sec=settings.import_timeout_sec,
            )
        return _analyses


def close_model_analyses() -> None:
    """Stop this process's analysis children (the API's shutdown)."""
    global _analyses
    with _analyses_lock:
        if _analyses is not None:
            _analyses.close()
            _analyses = None


def _start_child(memory_bytes: int, parent_pid: int) -> None:
    """In a pool process: load TVM, then limit what the analyses may add, and silence them."""
    end_with_parent(parent_pid)  # an API server killed by -9 must not leave its analysts behind
    import tunefarm.tuner.model_analysis  # noqa: F401  (TVM, loaded before the limit)

    confine(memory_bytes)


def _analyse(model_path: str, target_text: str, layout: str, fp16: bool) -> ModelTasks:
    from tunefarm.tuner.model_analysis import analyse_model
    from tunefarm.tuning_db.workload_key import workload_key

    target = parse_target(target_text)
    try:
        tasks = analyse_model(
            Path(model_path),
            target=target,
            layout=layout,  # type: ignore[arg-type]
            fp16=fp16,
            guard_import=False,  # this process is the guard
        ).tasks
    except Exception as err:
        if is_out_of_memory(err):
            raise ModelValidationError(
                "finding the model's tasks needs more memory than its process may take "
                "(TUNEFARM_IMPORT_MEMORY_BYTES)"
            ) from err
        raise
    return ModelTasks(
        target_fingerprint=fingerprint(target).key,
        tasks=tuple(
            ModelTask(
                name=task.name,
                workload_key=workload_key(task.mod),
                weight=task.weight,
                flops=task.flops,
            )
            for task in tasks
        ),
    )


_recent: dict[tuple[int, str, tuple[str, ...]], tuple[float, dict[str, float]]] = {}


def best_times(
    engine: Engine, keys: list[str], target_key: str, *, max_age_sec: float = 0.0
) -> dict[str, float]:
    """Workload key → best verified run time on the target, for the keys that have one.

    ``max_age_sec``: an answer read that recently may be given again.
    """
    cache_key = (id(engine), target_key, tuple(keys))
    remembered = _recent.get(cache_key)
    if remembered is not None and time.monotonic() - remembered[0] < max_age_sec:
        return remembered[1]
    best = _read_best_times(engine, keys, target_key)
    if len(_recent) > 10_000:
        _recent.clear()
    _recent[cache_key] = (time.monotonic(), best)
    return best


def _read_best_times(engine: Engine, keys: list[str], target_key: str) -> dict[str, float]:
    # What a build would use: the fingerprint's own records, else its target class's (an
    # H100's records for an H200, the same TVM version).
    return best_verified_times(engine, keys, target_key)
