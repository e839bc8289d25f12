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


@dataclass(frozen=True)
class Coverage:
    tasks_total: int
    tasks_covered: int
    flops_total: float
    flops_covered: float

    @property
    def task_percent(self) -> float:
        return 100.0 * self.tasks_covered / self.tasks_total if self.tasks_total else 100.0

    @property
    def flops_percent(self) -> float:
        return 100.0 * self.flops_covered / self.flops_total if self.flops_total else 100.0

    def as_dict(self) -> dict[str, float]:
        return {
            "tasks_total": self.tasks_total,
            "tasks_covered": self.tasks_covered,
            "tasks_percent": round(self.task_percent, 2),
            "flops_total": self.flops_total,
            "flops_covered": self.flops_covered,
            "flops_percent": round(self.flops_percent, 2),
        }


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


def look_up_tasks(tasks: list[TuningTask], *, database: Database, target: Target) -> Coverage:
    """Fill ``best_sec_before`` of every task from the database and report the coverage."""
    for task in tasks:
        task.best_sec_before = _best_run_sec(database, task, target)
    covered = [task for task in tasks if task.covered]
    return Coverage(
        tasks_total=len(tasks),
        tasks_covered=len(covered),
        flops_total=sum(task.flops * task.weight for task in tasks),
        flops_covered=sum(task.flops * task.weight for task in covered),
    )


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
