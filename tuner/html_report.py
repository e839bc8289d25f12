"""``report.html``: a library's manifest as a page a person reads (issue 20).

One self-contained file (inline CSS and SVG, no script, nothing fetched): the whole model's
estimated latency over trials, one small curve per task (its best time over its trials), the
coverage plan, the per-task table, and the library's latency against the untuned build and the
peers the manifest has. Every name shown is escaped: a model whose input is named ``<script>``
shows that as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy import Engine

from tunefarm.tuning_db.tuning_curves import Trial, trials_in_order

TEMPLATE = "report.html.j2"
CHART_WIDTH, CHART_HEIGHT = 640, 220
SPARK_WIDTH, SPARK_HEIGHT = 160, 40


@dataclass(frozen=True)
class Curve:
    """Best time so far (µs) after each trial; None until the first trial that ran."""

    points: list[float | None]

    @property
    def best(self) -> float | None:
        known = [p for p in self.points if p is not None]
        return min(known) if known else None

    def svg_points(self, width: int, height: int) -> str:
        """The polyline's points, x over trials and y over µs (lower is better, drawn lower)."""
        known = [(i, p) for i, p in enumerate(self.points) if p is not None]
        if not known:
            return ""
        top = max(p for _, p in known)
        bottom = min(p for _, p in known)
        span = (top - bottom) or top or 1.0
        last = max(len(self.points) - 1, 1)
        return " ".join(
            f"{i / last * width:.1f},{height - (p - bottom) / span * (height - 4) - 2:.1f}"
            for i, p in known
        )


def task_curves(trials: Sequence[Trial]) -> dict[str, Curve]:
    """Per workload, the best time so far after each of its trials, in µs."""
    curves: dict[str, list[float | None]] = {}
    best: dict[str, float] = {}
    for trial in trials:
        if trial.run_sec is not None:
            us = trial.run_sec * 1e6
            best[trial.workload_key] = min(best.get(trial.workload_key, us), us)
        curves.setdefault(trial.workload_key, []).append(best.get(trial.workload_key))
    return {key: Curve(points) for key, points in curves.items()}


def model_curve(trials: Sequence[Trial], weights: dict[str, int]) -> Curve:
    """The whole model's estimate after each trial: the weighted sum of every task's best so
    far. None until every task has a time (an estimate that leaves a task out reads low)."""
    best: dict[str, float] = {}
    points: list[float | None] = []
    for trial in trials:
        if trial.workload_key not in weights:
            continue
        if trial.run_sec is not None:
            us = trial.run_sec * 1e6
            best[trial.workload_key] = min(best.get(trial.workload_key, us), us)
        complete = len(best) == len(weights)
        points.append(sum(weights[k] * best[k] for k in weights) if complete else None)
    return Curve(points)


def render_report(manifest: dict[str, Any], trials: Sequence[Trial]) -> str:
    tasks = manifest.get("tasks", [])
    weights = {t["workload_key"]: int(t["weight"]) for t in tasks if t.get("workload_key")}
    curves = task_curves(trials)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,  # every name in a manifest comes from the user's model
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template(TEMPLATE).render(
        manifest=manifest,
        tasks=tasks,
        curves=curves,
        model=model_curve(trials, weights),
        trials=len([t for t in trials if t.workload_key in weights]),
        chart=(CHART_WIDTH, CHART_HEIGHT),
        spark=(SPARK_WIDTH, SPARK_HEIGHT),
    )


def report_trials(
    manifest: dict[str, Any], engine: Engine, *, team_id: int | None = None
) -> list[Trial]:
    """The trials on record of the manifest's tasks, on its target's fingerprint, that
    ``team_id`` may see."""
    keys = [t["workload_key"] for t in manifest.get("tasks", []) if t.get("workload_key")]
    return trials_in_order(engine, keys, manifest["target"]["fingerprint"], team_id=team_id)


def write_report(path: Path, manifest: dict[str, Any], trials: Sequence[Trial]) -> Path:
    path.write_text(render_report(manifest, trials), encoding="utf-8")
    return path
