"""MetaSchedule's tuning loop, with the next batch searched while the current one is measured.

Once measurement is spread over a farm, the coordinator's search sets the pace. MetaSchedule's
C++ ``TaskScheduler::Tune`` cannot overlap the two for one task: it checks that a task has no
running futures before it searches that task again, and the gradient scheduler joins the task
it picks. So this loop drives each task's ``TuneContext`` itself, with MetaSchedule's own parts
unchanged: its evolutionary search (``generate_measure_candidates`` /
``notify_runner_results``), its XGBoost cost model, the given database, builder and runner.

- Up to ``max_in_flight`` batches are out at once. While one is measured, the next is searched,
  with the cost model as it stood after the last results that came back.
- The search never proposes a candidate twice: EvolutionarySearch adds each pick to its set of
  measured workloads when it picks it, not when its result comes back.
- Budgets count trials when they are sent, as MetaSchedule's scheduler does for the global one.
  EvolutionarySearch advances its own per-task count only when results come back, so a batch
  searched ahead is cut to what is left of the task's and the global budget.
- Results are recorded as MetaSchedule's default measure callbacks do (``AddToDatabase``,
  ``RemoveBuildArtifact``, ``UpdateCostModel``), then the Python callbacks run; one that raises
  (a cancelled job) ends the loop, and batches still out are dropped unrecorded.
- Tasks are picked as MetaSchedule's ``GradientBased`` scheduler picks them: one round robin,
  then by the weighted gradient of each task's best latency.
- A task whose design space or search raises (a tensor-core rule's random tiling can hit a
  ``ScheduleError``) is tried again, then dropped with its error in ``LoopStats.failed_tasks``;
  the other tasks go on. MetaSchedule's loop would end the whole job there.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import tvm.s_tir.meta_schedule as ms
from tvm.runtime import Device
from tvm.s_tir.meta_schedule.builder import Builder, BuilderInput, BuilderResult
from tvm.s_tir.meta_schedule.cost_model import CostModel
from tvm.s_tir.meta_schedule.database import Database, TuningRecord
from tvm.s_tir.meta_schedule.measure_callback import (
    AddToDatabase,
    MeasureCallback,
    RemoveBuildArtifact,
    UpdateCostModel,
)
from tvm.s_tir.meta_schedule.measure_callback.measure_callback import _PyMeasureCallback
from tvm.s_tir.meta_schedule.runner import Runner, RunnerFuture, RunnerInput, RunnerResult
from tvm.s_tir.meta_schedule.search_strategy import MeasureCandidate
from tvm.s_tir.meta_schedule.tune_context import TuneContext
from tvm.s_tir.meta_schedule.utils import remove_build_dir

from tunefarm.tuner import interrupts
from tunefarm.tuner.settings import Settings
from tunefarm.tuning_db.sql_database import FAILED_RUN_SEC

logger = logging.getLogger(__name__)

PREPARE_ATTEMPTS = 3
"""Design-space generation samples at random: a failed one is tried again this often."""
GRADIENT_ALPHA = 0.2
GRADIENT_WINDOW = 3
"""MetaSchedule's ``GradientBased`` defaults."""


@dataclass
class LoopStats:
    """Where the coordinator's time went, for the benchmark."""

    batches: int = 0
    trials: int = 0
    search_sec: float = 0.0
    """In ``generate_measure_candidates``: the evolutionary search and its cost-model queries."""
    waiting_sec: float = 0.0
    """Blocked on a batch's results with nothing to search."""
    recording_sec: float = 0.0
    """Database commits, cost-model updates and the callbacks."""
    overlapped_batches: int = 0
    """Batches searched while another was out being measured."""
    prepare_sec: float = 0.0
    """Design spaces and search set-up (``pre_tuning``), task by task."""
    prepared_while_waiting: int = 0
    """Tasks prepared while a batch was out, instead of waiting for it."""
    first_batch_sent_sec: float | None = None
    """From the loop's start to the first batch handed to the runner."""
    prepared_before_first_batch: int = 0
    """Tasks prepared when the first batch left (1: only its own)."""
    failed_tasks: dict[str, str] = field(default_factory=dict)
    """Tasks dropped because their design space or search raised: name -> the error."""


last_stats = LoopStats()
"""The stats of the latest ``tune_tasks`` call in this process."""


@dataclass
class _Task:
    ctx: TuneContext
    weight: float
    cap: int
    """This task's share of the trials."""
    sent: int = 0
    prepared: bool = False
    """Its design space is generated and its search started (``pre_tuning``)."""
    exhausted: bool = False
    """The search has nothing more, or the task's budget is sent."""
    best_ms: list[float] = field(default_factory=list)
    """Best latency after each batch came back, as ``GradientBased`` keeps it."""
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class _Batch:
    task_id: int
    candidates: list[MeasureCandidate]
    builder_results: list[BuilderResult]
    futures: list[RunnerFuture]

    def done(self) -> bool:
        return all(future.done() for future in self.futures)


def tune_tasks(
    *,
    tasks: list[TuneContext],
    task_weights: Sequence[float],
    work_dir: str | None = None,
    max_trials_global: int,
    max_trials_per_task: int | Sequence[int] | None = None,
    num_trials_per_iter: int = 64,
    builder: Builder,
    runner: Runner,
    database: Database,
    cost_model: CostModel,
    measure_callbacks: Sequence[MeasureCallback],
    overlap: bool | None = None,
    max_in_flight: int = 2,
    seed: int | None = None,
    first_batch: int | None = None,
) -> None:
    """Tune ``tasks`` like ``ms.tune_tasks``, searching ahead while batches are measured.

    ``overlap=None`` follows ``Settings.search_overlap`` (``TUNEFARM_SEARCH_OVERLAP``); with
    False, MetaSchedule's own ``ms.tune_tasks`` runs instead, with the same arguments.
    ``max_in_flight`` is how many batches may be out at once (1: no overlap, this loop).
    ``first_batch`` cuts the loop's first batch in two, the first part of that size (the
    executor's processes): its results come back after one round of builds, not several.
    ``max_trials_per_task`` may give each task its own cap; MetaSchedule's loop takes one cap
    for all, so it gets the largest and its gradient scheduler spreads the trials.
    """
    if max_trials_per_task is None:
        caps = [max_trials_global] * len(tasks)
    elif isinstance(max_trials_per_task, int):
        caps = [max_trials_per_task] * len(tasks)
    else:
        caps = list(max_trials_per_task)
    if overlap is None:
        overlap = Settings().search_overlap
    global last_stats
    if not overlap:
        last_stats = LoopStats()  # MetaSchedule's loop keeps no stats of ours
        ms.tune_tasks(
            tasks=tasks,
            task_weights=list(task_weights),
            work_dir=work_dir or "",
            max_trials_global=max_trials_global,
            max_trials_per_task=max(caps, default=max_trials_global),
            num_trials_per_iter=num_trials_per_iter,
            builder=builder,
            runner=runner,
            database=database,
            cost_model=cost_model,
            measure_callbacks=list(measure_callbacks),
        )
        return
    if len(tasks) != len(task_weights) or len(tasks) != len(caps):
        raise ValueError("one weight and one cap per task")
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    loop = _OverlappedLoop(
        tasks,
        task_weights,
        max_trials_global=max_trials_global,
        max_trials_per_task=caps,
        num_trials_per_iter=num_trials_per_iter,
        builder=builder,
        runner=runner,
        database=database,
        cost_model=cost_model,
        measure_callbacks=measure_callbacks,
        max_in_flight=max_in_flight,
        seed=seed,
        first_batch=first_batch,
    )
    last_stats = loop.stats
    loop.run()


class _OverlappedLoop:
    def __init__(
        self,
        contexts: list[TuneContext],
        weights: Sequence[float],
        *,
        max_trials_global: int,
        max_trials_per_task: list[int],
        num_trials_per_iter: int,
        builder: Builder,
        runner: Runner,
        database: Database,
        cost_model: CostModel,
        measure_callbacks: Sequence[MeasureCallback],
        max_in_flight: int,
        seed: int | None,
        first_batch: int | None = None,
    ) -> None:
        self.first_batch = first_batch
        self.tasks = [
            _Task(ctx, float(weight), cap=cap)
            for ctx, weight, cap in zip(contexts, weights, max_trials_per_task, strict=True)
        ]
        self.max_trials_global = max_trials_global
        self.num_trials_per_iter = num_trials_per_iter
        self.builder = builder
        self.runner = runner
        self.database = database
        self.cost_model = cost_model
        self.max_in_flight = max_in_flight
        self.random = random.Random(seed)
        self.sent = 0
        self.picks = 0
        self.in_flight: list[_Batch] = []
        self.stats = LoopStats()
        self.started = time.perf_counter()
        self._record_steps = [self._recording_step(callback) for callback in measure_callbacks]

    def run(self) -> None:
        try:
            with interrupts.cooperative():
                self._loop()
        finally:
            for task in self.tasks:
                if task.prepared:
                    task.ctx.post_tuning()

    def _loop(self) -> None:
        while True:
            interrupts.stop_if_requested()
            for batch in [batch for batch in self.in_flight if batch.done()]:
                self._join(batch)
            if len(self.in_flight) >= self.max_in_flight:
                self._wait_for(self.in_flight[0])
                continue
            task_id = self._next_task() if self.sent < self.max_trials_global else None
            if task_id is None:
                if not self.in_flight:
                    return
                self._wait_for(self.in_flight[0])
                continue
            self._search_and_send(task_id)

    def _wait_for(self, batch: _Batch) -> None:
        """Join ``batch``; while it is out, prepare a task that has not been (issue 16).

        Preparing every task before the first batch went out kept a 30-task GPU model from
        measuring anything for 1.5-2 minutes. A task is now prepared when it is first picked,
        or while the loop would only wait, so the first batch leaves after one task's
        preparation and search.
        """
        if not batch.done():
            waiting = next(
                (task for task in self.tasks if not task.prepared and not task.exhausted), None
            )
            if waiting is not None:
                self._prepare(waiting)
                self.stats.prepared_while_waiting += 1
                return
        self._join(batch)

    def _prepare(self, task: _Task) -> bool:
        """Generate the task's design space and start its search; False if it was dropped."""
        started = time.perf_counter()
        for attempt in range(1, PREPARE_ATTEMPTS + 1):
            try:
                with ms.Profiler.timeit("InitializeTask"):
                    spaces = task.ctx.generate_design_space()
                    task.ctx.pre_tuning(
                        task.cap,
                        self.num_trials_per_iter,
                        spaces,
                        self.database,
                        self.cost_model,
                    )
            except Exception as err:  # a ScheduleError from a rule, most often
                interrupts.stop_if_requested()  # not the task's fault: the user's Ctrl-C
                if attempt == PREPARE_ATTEMPTS:
                    self._drop(task, err)
            else:
                task.prepared = True
                break
        self.stats.prepare_sec += time.perf_counter() - started
        return task.prepared

    def _drop(self, task: _Task, err: Exception) -> None:
        """Give up on ``task``: it keeps the trials it has; the loop goes on with the others."""
        task.exhausted = True
        name = str(task.ctx.task_name)
        lines = [line for line in str(err).splitlines() if line.strip()]
        # TVM's ScheduleError prints the whole module, then the message at the end.
        reason = f"{type(err).__name__}: {lines[-1] if lines else ''}".strip()
        message = next((line for line in lines if line.startswith("Error message:")), None)
        if message is not None:
            reason = f"{type(err).__name__}: {message.removeprefix('Error message:').strip()}"
        self.stats.failed_tasks[name] = reason
        logger.warning("task %s dropped from the search: %s", name, reason)

    def _search_and_send(self, task_id: int) -> None:
        task = self.tasks[task_id]
        if not task.prepared and not self._prepare(task):
            return
        overlapped = bool(self.in_flight)
        started = time.perf_counter()
        try:
            candidates = task.ctx.generate_measure_candidates()
        except Exception as err:
            interrupts.stop_if_requested()
            self._drop(task, err)
            return
        finally:
            self.stats.search_sec += time.perf_counter() - started
        if candidates is None:
            task.exhausted = True
            return
        room = min(task.cap - task.sent, self.max_trials_global - self.sent)
        candidates = list(candidates)[:room]
        if not candidates:
            return  # nothing new this time; the search stops itself after a few of these
        parts = [candidates]
        if self.stats.batches == 0 and self.first_batch and 0 < self.first_batch < len(candidates):
            # Issue 16: 32 candidates on 15 processes came back after two or three rounds of
            # builds; the first part comes back after one.
            parts = [candidates[: self.first_batch], candidates[self.first_batch :]]
        for part in parts:
            self._send(task_id, task, part, overlapped=overlapped or part is not parts[0])

    def _send(
        self, task_id: int, task: _Task, candidates: list[MeasureCandidate], *, overlapped: bool
    ) -> None:
        target = task.ctx.target
        with ms.Profiler.timeit("SendToBuilder"):
            builder_results = self.builder.build(
                [BuilderInput(candidate.sch.mod, target) for candidate in candidates]
            )
        with ms.Profiler.timeit("SendToRunner"):
            futures = self._send_to_runner(task, candidates, builder_results)
        self.in_flight.append(_Batch(task_id, candidates, builder_results, futures))
        task.sent += len(candidates)
        self.sent += len(candidates)
        if task.sent >= task.cap:
            task.exhausted = True
        self.stats.batches += 1
        if self.stats.first_batch_sent_sec is None:
            self.stats.first_batch_sent_sec = time.perf_counter() - self.started
            self.stats.prepared_before_first_batch = sum(t.prepared for t in self.tasks)
        self.stats.trials += len(candidates)
        self.stats.overlapped_batches += overlapped

    def _send_to_runner(
        self, task: _Task, candidates: list[MeasureCandidate], built: list[BuilderResult]
    ) -> list[RunnerFuture]:
        device_type = Device._DEVICE_TYPE_TO_NAME[task.ctx.target.get_target_device_type()]
        inputs = [
            RunnerInput(result.artifact_path, device_type, candidate.args_info)
            for candidate, result in zip(candidates, built, strict=True)
            if result.error_msg is None
        ]
        sent = iter(self.runner.run(inputs) if inputs else [])
        # A candidate that did not build gets a future that is already done, as in MetaSchedule.
        return [
            next(sent) if result.error_msg is None else _FailedBuild(result.error_msg)
            for result in built
        ]

    def _join(self, batch: _Batch) -> None:
        self.in_flight.remove(batch)
        started = time.perf_counter()
        with ms.Profiler.timeit("JoinRunnerFutures"):
            results = [future.result() for future in batch.futures]
        self.stats.waiting_sec += time.perf_counter() - started
        started = time.perf_counter()
        task = self.tasks[batch.task_id]
        task.ctx.notify_runner_results(batch.candidates, results)
        for step in self._record_steps:
            step(batch, results)
        for build, result in zip(batch.builder_results, results, strict=True):
            failed = build.error_msg is not None or result.error_msg is not None
            task.latencies_ms.append(
                1e9 if failed else statistics.median(float(s) for s in result.run_secs) * 1e3
            )
        if task.latencies_ms:
            task.best_ms.append(min(task.latencies_ms))
        self.stats.recording_sec += time.perf_counter() - started

    def _next_task(self) -> int | None:
        """MetaSchedule's ``GradientBased`` choice, without its joins: one round robin, then
        the task whose weighted latency is falling fastest."""
        alive = [i for i, task in enumerate(self.tasks) if not task.exhausted]
        if not alive:
            return None
        while self.picks < len(self.tasks):
            self.picks += 1
            if not self.tasks[self.picks - 1].exhausted:
                return self.picks - 1
        gradients = [self._gradient(task_id) for task_id in alive]
        if max(gradients) == min(gradients):
            return alive[self.random.randrange(len(alive))]
        return alive[gradients.index(max(gradients))]

    def _gradient(self, task_id: int) -> float:
        task = self.tasks[task_id]
        history, count = task.best_ms, len(task.best_ms)
        if count == 0 or history[-1] >= 1e9:
            return -1e9  # no valid result yet (or none back yet): as GradientBased skips it
        best = history[-1]
        window = GRADIENT_WINDOW
        recent = (history[-1 - window] - best) / window if count >= 1 + window else 0.0
        return (GRADIENT_ALPHA * recent + (1 - GRADIENT_ALPHA) * best / count) * task.weight

    # -- recording: what MetaSchedule's default measure callbacks do --------------------------

    def _recording_step(self, callback: MeasureCallback) -> Any:
        if isinstance(callback, AddToDatabase):
            return self._add_to_database
        if isinstance(callback, RemoveBuildArtifact):
            return self._remove_build_artifacts
        if isinstance(callback, UpdateCostModel):
            return self._update_cost_model
        if isinstance(callback, _PyMeasureCallback):
            # The Python object behind the FFI wrapper (``derived_object`` keeps it as
            # ``_inst``). It gets no task scheduler: this loop has none to give.
            apply = callback._inst.apply  # type: ignore[attr-defined]
            return lambda batch, results: apply(
                None, batch.task_id, batch.candidates, batch.builder_results, results
            )
        raise TypeError(f"the overlapped loop cannot run measure callback {callback!r}")

    def _add_to_database(self, batch: _Batch, results: list[RunnerResult]) -> None:
        with ms.Profiler.timeit("MeasureCallback/AddToDatabase"):
            ctx = self.tasks[batch.task_id].ctx
            workload = self.database.commit_workload(ctx.mod)
            for candidate, result in zip(batch.candidates, results, strict=True):
                run_secs = (
                    [float(sec) for sec in result.run_secs]
                    if result.run_secs is not None
                    else [FAILED_RUN_SEC]
                )
                self.database.commit_tuning_record(
                    TuningRecord(
                        candidate.sch.trace,
                        workload,
                        run_secs,
                        ctx.target,
                        candidate.args_info,
                    )
                )

    def _remove_build_artifacts(self, batch: _Batch, results: list[RunnerResult]) -> None:
        with ms.Profiler.timeit("MeasureCallback/RemoveBuildArtifact"):
            for build in batch.builder_results:
                if build.artifact_path is not None:
                    remove_build_dir(build.artifact_path)

    def _update_cost_model(self, batch: _Batch, results: list[RunnerResult]) -> None:
        with ms.Profiler.timeit("MeasureCallback/UpdateCostModel"):
            kept = [
                (candidate, result)
                for candidate, build, result in zip(
                    batch.candidates, batch.builder_results, results, strict=True
                )
                if build.error_msg is None
                and (
                    result.error_msg is not None
                    or (result.run_secs is not None and sum(float(s) for s in result.run_secs) > 0)
                )
            ]
            self.cost_model.update(
                self.tasks[batch.task_id].ctx,
                [candidate for candidate, _ in kept],
                [result for _, result in kept],
            )


class _FailedBuild:
    """The runner future of a candidate that did not build: done, with the build's error."""

    def __init__(self, error: str) -> None:
        self._result = RunnerResult(None, error)

    def done(self) -> bool:
        return True

    def result(self) -> RunnerResult:
        return self._result
