"""Tuning tasks of a model and what the database already knows about them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import tvm.s_tir.meta_schedule as ms
from tvm.ir import IRModule
from tvm.s_tir.analysis import estimate_tir_flops
from tvm.s_tir.meta_schedule.database import Database
from tvm.target import Target


@dataclass
class TuningTask:
    name: str
    weight: int
    flops: float
    mod: IRModule
    extracted: ms.ExtractedTask
    best_sec_before: float | None = None
    """Best run time in the database for this target before tuning; None means not covered."""

    @property
    def covered(self) -> bool:
        return self.best_sec_before is not None


def extract_tuning_tasks(mod: IRModule, *, target: Target) -> list[TuningTask]:
    """MetaSchedule's tasks of ``mod``, heaviest first (FLOPs x weight)."""
    tasks = []
    for extracted in ms.relax_integration.extract_tasks(mod, target):
        task_mod = extracted.dispatched[0]
        try:
            flops = float(estimate_tir_flops(task_mod))
        except Exception:  # some layout ops have no FLOP estimate
            flops = 0.0
        tasks.append(
            TuningTask(
                name=str(extracted.task_name),
                weight=int(extracted.weight),
                flops=flops,
                mod=task_mod,
                extracted=extracted,
            )
        )
    return sorted(tasks, key=lambda task: (-task.flops * task.weight, task.name))


@runtime_checkable
class RunTimeLookup(Protocol):
    """A database that knows a workload's best run time without rebuilding its record
    (``SqlDatabase``)."""

    def best_run_sec(self, mod: IRModule, target: Target | None = None) -> float | None: ...


def look_up_tasks(tasks: list[TuningTask], *, database: Database, target: Target) -> None:
    """Fill ``best_sec_before`` of every task from the database (``plan_coverage`` reports
    the coverage)."""
    for task in tasks:
        task.best_sec_before = _best_run_sec(database, task, target)


def _best_run_sec(database: Database, task: TuningTask, target: Target) -> float | None:
    if isinstance(database, RunTimeLookup):
        # A query_tuning_record replays the record's trace on the workload, and a tensor-core
        # trace needs TVM's tensor intrinsics registered: an import of 10 s to minutes that
        # the run time alone does not need.
        return database.best_run_sec(task.mod, target)
    record = database.query_tuning_record(task.mod, target, task.name)
    return _mean(record.run_secs) if record is not None else None


def _mean(run_secs: object) -> float:
    values = [float(sec) for sec in run_secs]  # type: ignore[attr-defined]
    return sum(values) / len(values)
