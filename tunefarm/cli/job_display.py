"""One live progress display for a job, whether followed in the database or over the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@dataclass(frozen=True)
class JobSnapshot:
    state: str
    message: str
    trials_done: int
    trials_total: int | None
    detail: str
    """What follows the trial count on the bar: best latency so far, workers, ..."""


class JobProgressDisplay:
    """A progress bar for a job on a terminal; silent otherwise."""

    def __init__(self, console: Console, job_id: str, *, label: str) -> None:
        self.console = console
        self.enabled = console.is_terminal
        self.job_id = job_id
        self.label = label
        self._progress: Progress | None = None
        self._bar: Any = None
        self._shown: tuple[str, str] = ("", "")

    def show(self, snapshot: JobSnapshot) -> None:
        if not self.enabled:
            return
        if (snapshot.state, snapshot.message) != self._shown:
            self._shown = (snapshot.state, snapshot.message)
            self.console.print(
                f"[bold cyan]•[/] job {self.job_id}: {snapshot.state} — {snapshot.message}"
            )
        if snapshot.state == "tuning" and snapshot.trials_total:
            if self._progress is None:
                self._progress = Progress(
                    TextColumn(self.label),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("trials · {task.fields[detail]}"),
                    TimeElapsedColumn(),
                    console=self.console,
                )
                self._progress.start()
                self._bar = self._progress.add_task(
                    "job", total=snapshot.trials_total, detail=snapshot.detail
                )
            self._progress.update(self._bar, completed=snapshot.trials_done, detail=snapshot.detail)
        else:
            if self._progress is not None:
                # The count the tuning ended with: the last poll while tuning may be behind it.
                self._progress.update(
                    self._bar, completed=snapshot.trials_done, detail=snapshot.detail
                )
            self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
