"""Measure the default schedules of a model's tasks and file them as records.

Every CPU task without a record gets the variants ``tuner.cpu_schedule_rules`` makes for it
(and, for a task with no anchor, TVM's own unscheduled function). They are timed by the same
trial executor as tuning trials (the local warm pool or the farm's measure workers) and filed
as verified records. The build then takes, per task, the fastest record the database holds:
a default schedule, or a tuned one once a search has found a faster one. So a tuned library is
never slower, task by task, than the 0-trial one, and a search starts from the default schedule
(MetaSchedule's evolutionary search seeds its population with the best records).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import tvm
from tvm.s_tir import Schedule
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.database import TuningRecord
from tvm.target import Target

from tunefarm.tuner import interrupts
from tunefarm.tuner.cpu_schedule_rules import TVM_DEFAULT, cpu_default_schedules
from tunefarm.tuner.tasks import TuningTask
from tunefarm.tuner.trial import MeasureSettings, TrialRequest
from tunefarm.tuner.trial_executor import TrialExecutor
from tunefarm.tuning_db import SqlDatabase

logger = logging.getLogger(__name__)

SMALL_TASK_FLOPS = 1e7
"""Tasks this small also have their unscheduled function timed (a few ms at worst)."""


@dataclass
class TaskDefaults:
    """The default schedules one task got, with what each measured."""

    variants: dict[str, float | None] = field(default_factory=dict)
    """Rule name -> mean run time in seconds, None when it failed to build or run."""

    @property
    def best(self) -> tuple[str, float] | None:
        timed = [(sec, rule) for rule, sec in self.variants.items() if sec is not None]
        if not timed:
            return None
        sec, rule = min(timed)
        return rule, sec


@dataclass
class DefaultScheduleReport:
    tasks: dict[str, TaskDefaults] = field(default_factory=dict)
    measured: int = 0
    failed: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class _Candidate:
    task: TuningTask
    rule: str
    schedule: Schedule


def needs_defaults(task: TuningTask, target: Target) -> bool:
    """A CPU task with no record of its own gets its default schedules measured."""
    return target.kind.name == "llvm" and not task.covered


def measure_default_schedules(
    tasks: list[TuningTask],
    *,
    database: SqlDatabase,
    target: Target,
    executor: TrialExecutor,
    settings: MeasureSettings | None = None,
) -> DefaultScheduleReport:
    """Time the default schedules of ``tasks`` on ``executor`` and file each measurement."""
    started = time.perf_counter()
    report = DefaultScheduleReport()
    candidates = [candidate for task in tasks for candidate in _candidates(task, target)]
    requests = [
        _request(candidate, target, settings or MeasureSettings()) for candidate in candidates
    ]
    handles = executor.submit(requests) if requests else []
    for candidate, handle in zip(candidates, handles, strict=True):
        interrupts.stop_if_requested()  # what is filed stays filed
        result = handle.result()
        defaults = report.tasks.setdefault(candidate.task.name, TaskDefaults())
        if result.run_secs is None:
            report.failed += 1
            defaults.variants[candidate.rule] = None
            logger.info(
                "default schedule %s of %s failed: %s",
                candidate.rule,
                candidate.task.name,
                result.error,
            )
            continue
        report.measured += 1
        defaults.variants[candidate.rule] = sum(result.run_secs) / len(result.run_secs)
        database.commit_tuning_record(
            TuningRecord(
                candidate.schedule.trace,
                database.commit_workload(candidate.task.mod),
                result.run_secs,
                target,
                ArgInfo.from_entry_func(candidate.schedule.mod),
            )
        )
    report.seconds = time.perf_counter() - started
    return report


def _candidates(task: TuningTask, target: Target) -> list[_Candidate]:
    schedules = cpu_default_schedules(task.mod, target)
    candidates = [_Candidate(task, made.rule, made.schedule) for made in schedules]
    if task.flops < SMALL_TASK_FLOPS or not any(
        made.rule.startswith("anchor") for made in schedules
    ):
        # Without a conv or matmul, or at a few MFLOPs, TVM's own lowering is cheap to time,
        # and with no parallel loop to start it may win.
        candidates.append(_Candidate(task, TVM_DEFAULT, Schedule(task.mod)))
    return candidates


def _request(candidate: _Candidate, target: Target, settings: MeasureSettings) -> TrialRequest:
    mod = candidate.schedule.mod
    return TrialRequest(
        mod_json=tvm.ir.save_json(mod),
        target_json=str(target),
        args_info=[info.as_json() for info in ArgInfo.from_entry_func(mod)],
        settings=settings,
    )
