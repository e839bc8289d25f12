"""What a job will reuse and what it will tune, known before its first trial.

``tunefarm plan`` prints it, a job's manifest keeps it as ``coverage_before_tuning``, and a farm
job's status shows it while the job runs. For each task:

- ``exact``: a verified record of the same workload on this target fingerprint: built as is.
- ``class``: a verified record of the same workload measured on another machine of the same
  target class and TVM version (an H100's record for an H200): built as is, and marked.
- ``similar``: no such record, but workloads of the same operator family were measured; their
  records warm-start the search (seeds that our workers measure, and the cost model's first
  training data). The distance is to the nearest one.
- ``none``: tuned from scratch.

Covered or not, every task may get trials: the budget goes where the model's time is and
where there is room to improve (``tuner.trial_budget``), so ``--trials N`` on a fully covered
model tunes on. The plan's ``planned_trials`` is that allocation from what the database knows
before the job starts; the compile allocates again once it has timed the default schedules.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from tvm.ir import IRModule

from tunefarm.tuner.job_spec import JobSpec
from tunefarm.tuner.tasks import TuningTask, look_up_tasks
from tunefarm.tuner.trial_budget import (
    MIN_TASK_TRIALS,
    TaskOutlook,
    allocate_trials,
    estimated_times,
)

Reuse = Literal["exact", "class", "similar", "none"]


class ReuseLookup(Protocol):
    """What the plan asks the database (``SqlDatabase`` answers it)."""

    def workload_key(self, mod: IRModule) -> str: ...

    def best_record_relation(self, mod: IRModule) -> str | None: ...

    def measured_count(self, mod: IRModule) -> int: ...

    def seed_workloads(self, mod: IRModule, *, workloads: int = ...) -> dict[str, float]: ...


@dataclass(frozen=True)
class TaskCoverage:
    name: str
    workload_key: str
    weight: int
    flops: float
    reuse: Reuse
    best_sec: float | None
    """The record a build would use (``exact`` and ``class``)."""
    distance: float | None
    """``similar``: the distance to the nearest measured workload of the same family."""
    neighbours: int
    """``similar``: how many neighbouring workloads have records to seed the search with."""
    measured: int = 0
    """Schedules of this workload already measured on this target (trials spent before)."""
    planned_trials: int = 0
    """Its share of the job's trials."""

    @property
    def covered(self) -> bool:
        return self.reuse in ("exact", "class")

    @property
    def weighted_flops(self) -> float:
        return self.flops * self.weight

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workload_key": self.workload_key,
            "weight": self.weight,
            "flops": self.flops,
            "reuse": self.reuse,
            "best_latency_us": round(self.best_sec * 1e6, 3) if self.best_sec is not None else None,
            "distance": round(self.distance, 4) if self.distance is not None else None,
            "neighbours": self.neighbours,
            "measured": self.measured,
            "planned_trials": self.planned_trials,
        }


@dataclass(frozen=True)
class CoveragePlan:
    tasks: tuple[TaskCoverage, ...]
    trial_budget: int
    """Trials the job will spend at most: the sum of the tasks' planned trials."""
    first_round_trials: int = 0
    """The smallest budget that gives every task without a record of its own some trials."""
    new_without_trials: tuple[str, ...] = ()
    """Tasks without a record of their own, worth trials, that this budget gives none."""

    def _share(self, reuse: tuple[Reuse, ...]) -> tuple[int, float]:
        chosen = [task for task in self.tasks if task.reuse in reuse]
        return len(chosen), sum(task.weighted_flops for task in chosen)

    def summary(self) -> str:
        """One line: what is covered, what is similar, what the tuning will cost."""
        plan = self.as_dict()
        by_reuse = plan["tasks_by_reuse"]
        covered = f"{plan['tasks_covered']} covered"
        if by_reuse["class"]:
            covered += f" ({by_reuse['class']} measured on another machine of the target class)"
        line = (
            f"{plan['tasks_total']} tasks: {covered}, {by_reuse['similar']} similar, "
            f"{by_reuse['none']} new; {plan['flops_percent']:.0f}% of FLOPs covered; "
            f"up to {self.trial_budget} trials"
        )
        left_out = plan["uncovered_without_trials"]
        if self.trial_budget > 0 and left_out:
            # Issue 19: a small budget must not leave tasks untuned without a word.
            line += (
                f"; {left_out} tasks without a record of their own get no trial (trials for "
                f"each need --trials {plan['first_round_trials']} or more)"
            )
        return line

    def as_dict(self) -> dict[str, Any]:
        total_flops = sum(task.weighted_flops for task in self.tasks)
        total = len(self.tasks)

        def percent(part: float, whole: float) -> float:
            return round(100.0 * part / whole, 2) if whole else 100.0

        covered, covered_flops = self._share(("exact", "class"))
        similar, similar_flops = self._share(("similar",))
        counts = {reuse: sum(t.reuse == reuse for t in self.tasks) for reuse in _REUSE_ORDER}
        return {
            # The first six keys are the coverage every manifest has had since the local slice.
            "tasks_total": total,
            "tasks_covered": covered,
            "tasks_percent": percent(covered, total),
            "flops_total": total_flops,
            "flops_covered": covered_flops,
            "flops_percent": percent(covered_flops, total_flops),
            "tasks_by_reuse": counts,
            "tasks_similar_percent": percent(similar, total),
            "flops_similar_percent": percent(similar_flops, total_flops),
            "trial_budget": self.trial_budget,
            "uncovered_without_trials": len(self.new_without_trials),
            "first_round_trials": self.first_round_trials,
            "tasks": [task.as_dict() for task in self.tasks],
        }


_REUSE_ORDER: tuple[Reuse, ...] = ("exact", "class", "similar", "none")


def plan_coverage(
    tasks: list[TuningTask],
    *,
    database: ReuseLookup,
    trials: int,
    max_trials_per_task: int | None = None,
) -> CoveragePlan:
    """The plan of ``tasks``, whose ``best_sec_before`` ``look_up_tasks`` has filled.

    ``trials`` is the budget left to the job.
    """
    rows = []
    for task in tasks:
        reuse: Reuse
        distance: float | None = None
        neighbours = 0
        if task.covered:
            relation = database.best_record_relation(task.mod)
            reuse = "class" if relation == "class" else "exact"
        else:
            # The workloads a warm start takes seeds from, not their records: reading a record
            # replays its trace, and a tensor-core trace needs TVM's tensor intrinsics.
            seeds = database.seed_workloads(task.mod, workloads=4)
            if seeds:
                reuse = "similar"
                distance = min(seeds.values())
                neighbours = len(seeds)
            else:
                reuse = "none"
        rows.append(
            TaskCoverage(
                name=task.name,
                workload_key=database.workload_key(task.mod),
                weight=task.weight,
                flops=task.flops,
                reuse=reuse,
                best_sec=task.best_sec_before,
                distance=distance,
                neighbours=neighbours,
                measured=database.measured_count(task.mod),
            )
        )
    outlooks = [
        TaskOutlook(row.name, row.weight, row.flops, row.best_sec, spent=row.measured)
        for row in rows
    ]
    shares = allocate_trials(outlooks, trials, max_per_task=max_trials_per_task)
    rows = [replace(row, planned_trials=shares[row.name]) for row in rows]
    # Tasks with no estimated time (no FLOPs, as a transpose) never get trials: not counted.
    timed = {name for name, sec in estimated_times(outlooks).items() if sec > 0}
    new = {row.name for row in rows if row.reuse in ("similar", "none") and row.name in timed}
    return CoveragePlan(
        tasks=tuple(rows),
        trial_budget=sum(shares.values()),
        first_round_trials=_first_round(outlooks, new, max_trials_per_task),
        new_without_trials=tuple(sorted(name for name in new if shares[name] == 0)),
    )


def _first_round(outlooks: list[TaskOutlook], new: set[str], max_per_task: int | None) -> int:
    """The smallest budget that gives every task in ``new`` some trials (the allocation goes
    by each task's share of the time, so that is more than a minimum for each)."""
    if not new:
        return 0

    def enough(total: int) -> bool:
        shares = allocate_trials(outlooks, total, max_per_task=max_per_task)
        return all(shares[name] > 0 for name in new)

    high = MIN_TASK_TRIALS * len(new)
    while not enough(high):
        if high > 10_000_000:  # a task whose claim is zero never gets any
            return high
        high *= 2
    low = high // 2
    while low + 1 < high:  # enough(high) holds, enough(low) does not (or low is 0)
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def plan_model(model_path: Path, spec: JobSpec, *, database_url: str) -> CoveragePlan:
    """``tunefarm plan``: the plan a ``tunefarm compile`` of ``spec`` would start with.

    Records a team imported and no worker has measured yet do not count: a job measures them
    first, and only then may they cover a task.
    """
    from tunefarm.tuner.model_analysis import analyse_model
    from tunefarm.tuning_db import SqlDatabase

    target = spec.tvm_target
    choices = spec.options
    tasks = analyse_model(
        model_path,
        target=target,
        layout=choices.layout,
        fp16=choices.fp16,
        vendor_kernels=choices.vendor_kernels,
        tf32=choices.tf32,
    ).tasks
    database = SqlDatabase(database_url, target=target)
    look_up_tasks(tasks, database=database, target=target)
    return plan_coverage(
        tasks,
        database=database,
        trials=spec.trials,
        max_trials_per_task=choices.max_trials_per_task,
    )
