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


def test_the_estimate_is_the_whole_model_and_says_when_it_is_a_lower_bound() -> None:
    from typing import Any

    from tunefarm.tuner.tasks import TuningTask

    def task(name: str, weight: int, before: float | None) -> TuningTask:
        none: Any = None  # the estimate reads names, weights and the database's times only
        return TuningTask(name, weight, 1e6, none, none, best_sec_before=before)

    observer = ConsoleObserver(Console(file=io.StringIO(), force_terminal=True))
    observer.tuning_started(
        16, [task("conv", 2, 3e-4), task("dense", 1, 1e-4), task("pool", 1, None)]
    )
    # Only conv measured: dense counts at its record's time, pool at nothing, said so.
    first = TuningReport(trials=8, tasks={"conv": TaskProgress("conv", trials=8, best_sec=2e-4)})
    assert observer.estimate(first) == "≥ 0.500 ms (1 tasks not timed yet)"
    # Once every task has a time, it is the whole model's.
    second = TuningReport(
        trials=16,
        tasks={
            "conv": TaskProgress("conv", trials=8, best_sec=2e-4),
            "pool": TaskProgress("pool", trials=8, best_sec=5e-5),
        },
    )
    assert observer.estimate(second) == "0.550 ms"
    observer.tuning_finished()
