"""The progress display: a bar on a terminal, nothing when stdout is a pipe or file."""

from __future__ import annotations

import io

from rich.console import Console

from tunefarm.tuner.console_progress import ConsoleObserver
from tunefarm.tuner.search import TaskProgress, TuningReport
from tunefarm.tuning_db.job_state import JobState


def _drive(console: Console) -> None:
    observer = ConsoleObserver(console)
    observer.stage(JobState.IMPORTING, "importing into Relax")
    observer.tuning_started(8, [])
    report = TuningReport(trials=8, tasks={"conv": TaskProgress("conv", trials=8, best_sec=2e-4)})
    observer.tuning_progress(report)
    observer.tuning_finished()


def test_terminal_shows_stages_trials_and_best_latency() -> None:
    buffer = io.StringIO()
    _drive(Console(file=buffer, force_terminal=True, width=120))
    text = buffer.getvalue()
    assert "importing into Relax" in text
    assert "8/8" in text
    assert "0.200 ms" in text


def test_not_a_terminal_stays_quiet() -> None:
    buffer = io.StringIO()
    _drive(Console(file=buffer, force_terminal=False))
    assert buffer.getvalue() == ""
