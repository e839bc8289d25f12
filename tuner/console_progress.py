"""Rich progress for the CLI: stages as lines, trials as a bar with the best latency so far.

When stdout is not a terminal it stays quiet: no bar, no stage lines.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from tunefarm.tuner.compile_job import Phase
from tunefarm.tuner.coverage_plan import CoveragePlan
from tunefarm.tuner.search import TuningReport
from tunefarm.tuner.tasks import TuningTask


class ConsoleObserver:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.enabled = console.is_terminal
        self._progress: Progress | None = None
        self._bar: TaskID | None = None
        self._weights: dict[str, int] = {}
        self._before: dict[str, float | None] = {}

    def stage(self, phase: Phase, message: str) -> None:
        if self.enabled:
            self.console.print(f"[bold cyan]•[/] {message}")

    def planned(self, plan: CoveragePlan) -> None:
        pass  # its summary comes as the next stage line

    def tuning_started(self, total_trials: int, tasks: list[TuningTask]) -> None:
        if not self.enabled:
            return
        self._weights = {task.name: task.weight for task in tasks}
        self._before = {task.name: task.best_sec_before for task in tasks}
        self._progress = Progress(
            TextColumn("tuning {task.fields[count]} tasks"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("trials · estimated {task.fields[best]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._bar = self._progress.add_task(
            "tuning", total=total_trials, count=len(tasks), best="—"
        )

    def tuning_progress(self, report: TuningReport) -> None:
        if self._progress is None or self._bar is None:
            return
        self._progress.update(self._bar, completed=report.trials, best=self.estimate(report))

    def estimate(self, report: TuningReport) -> str:
        """The whole model's latency estimate: each task's best kernel so far, weighted, else
        what the database had for it (a record, a default schedule). Tasks with neither yet
        make it a lower bound, and say so: a sum over the measured tasks only went up as more
        were measured (issue 19)."""
        total, unknown = 0.0, 0
        for name in set(self._weights) | set(report.tasks):
            progress = report.tasks.get(name)
            sec = progress.best_sec if progress is not None else None
            if sec is None:
                sec = self._before.get(name)
            if sec is None:
                unknown += 1
                continue
            total += sec * self._weights.get(name, 1)
        if unknown == len(set(self._weights) | set(report.tasks)):
            return "—"
        text = f"{total * 1e3:.3f} ms"
        return f"≥ {text} ({unknown} tasks not timed yet)" if unknown else text

    def tuning_finished(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress = None
        self._bar = None
