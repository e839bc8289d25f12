"""A job's progress as its coordinator writes it to the job row, and as the API and the CLI read
it back: typed once, here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class TaskProgress(BaseModel):
    trials: int = 0
    """Across every attempt of the job."""
    failures: int = 0
    best_us: float | None = None
    curve: list[tuple[int, float]] = Field(default_factory=list)
    """(trials, best µs) at each improvement."""


class PlanCoverage(BaseModel):
    """The job's coverage before tuning (``tuner.coverage_plan.CoveragePlan.as_dict``)."""

    tasks_total: int
    tasks_covered: int
    tasks_percent: float
    flops_total: float
    flops_covered: float
    flops_percent: float
    tasks_by_reuse: dict[str, int]
    tasks_similar_percent: float
    flops_similar_percent: float
    trial_budget: int
    uncovered_without_trials: int = 0
    first_round_trials: int = 0
    tasks: list[dict[str, Any]]


class JobProgress(BaseModel):
    message: str | None = None
    trials: int = 0
    trials_total: int | None = None
    tasks: dict[str, TaskProgress] = Field(default_factory=dict)
    measured_by: dict[str, int] = Field(default_factory=dict)
    """Trials measured by each worker."""
    coverage: PlanCoverage | None = None
    """Written once, by the first attempt, before the first trial."""
    time_split: dict[str, Any] | None = None
    """Where this attempt's time went (``tuner.time_split``)."""

    @property
    def best_us_sum(self) -> float | None:
        """The sum of each task's best kernel so far: the model's estimated latency."""
        best = [task.best_us for task in self.tasks.values() if task.best_us is not None]
        return sum(best) if best else None
