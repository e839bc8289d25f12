"""What the dashboard's job page shows, from a job's status and (once it has one) its manifest.

The curves come from the tuning database's trials where the job has a manifest (as
``report.html`` draws them); while it runs, the page starts from the status and its script adds
a point per progress event.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Engine

from tunefarm.api.schemas import JobStatus
from tunefarm.api.services.teams import Team


@dataclass(frozen=True)
class TaskRow:
    name: str
    weight: int | None
    trials: int
    best_us: float | None
    share_percent: float | None
    """The task's share of the model's estimated time (weight times best)."""
    source: str | None
    """How the plan covered it: exact, class, similar, or new."""
    curve: list[float | None] = field(default_factory=list)
    """Best µs after each of its trials on record (finished jobs)."""


@dataclass(frozen=True)
class JobPage:
    status: JobStatus
    tasks: list[TaskRow]
    model_curve: list[float | None]
    """The whole model's estimate (µs) after each trial on record; empty while it runs."""
    manifest: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.status.state.finished

    def live_data(self) -> dict[str, Any]:
        """The page script's starting point (it goes into the page as JSON)."""
        return {
            "id": self.status.id,
            "finished": self.finished,
            "model_curve": self.model_curve,
            "tasks": {task.name: task.curve for task in self.tasks},
            "trials_done": self.status.trials_done,
            "estimated_latency_ms": self.status.estimated_latency_ms,
        }


def job_page(
    engine: Engine, team: Team, status: JobStatus, manifest: dict[str, Any] | None
) -> JobPage:
    plan = _plan_tasks(status, manifest)
    progress = {task.name: task for task in status.tasks}
    curves: dict[str, list[float | None]] = {}
    model_curve: list[float | None] = []
    if manifest is not None:
        from tunefarm.tuner.html_report import model_curve as curve_of_model
        from tunefarm.tuner.html_report import report_trials, task_curves

        trials = report_trials(manifest, engine, team_id=team.id)
        by_key = task_curves(trials)
        weights = {t["workload_key"]: int(t["weight"]) for t in plan if t.get("workload_key")}
        model_curve = curve_of_model(trials, weights).points
        curves = {
            str(t["name"]): by_key[t["workload_key"]].points
            for t in plan
            if t.get("workload_key") in by_key
        }
    names = [str(t["name"]) for t in plan] or list(progress)
    planned = {str(t["name"]): t for t in plan}
    rows = []
    for name in names:
        entry = planned.get(name, {})
        done = progress.get(name)
        best = done.best_latency_us if done and done.best_latency_us is not None else None
        if best is None:
            best = entry.get("best_latency_us")
        weight = entry.get("weight")
        rows.append(
            TaskRow(
                name=name,
                weight=int(weight) if weight is not None else None,
                trials=done.trials if done else int(entry.get("trials", 0) or 0),
                best_us=best,
                share_percent=None,
                source=entry.get("reuse") or entry.get("source"),
                curve=curves.get(name, []),
            )
        )
    total = sum((r.weight or 1) * r.best_us for r in rows if r.best_us is not None)
    if total > 0:
        rows = [
            replace(row, share_percent=round(100 * (row.weight or 1) * row.best_us / total, 1))
            if row.best_us is not None
            else row
            for row in rows
        ]
    return JobPage(status=status, tasks=rows, model_curve=model_curve, manifest=manifest)


def _plan_tasks(status: JobStatus, manifest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The tasks of the job's plan: the manifest's (with their trials and source) or the
    coverage plan's."""
    if manifest is not None and manifest.get("tasks"):
        return list(manifest["tasks"])
    coverage = status.coverage
    tasks = getattr(coverage, "tasks", None) or []
    return [t if isinstance(t, dict) else t.model_dump() for t in tasks]
