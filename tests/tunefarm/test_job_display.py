"""The job progress display (issue 19): the bar ends at the job's final count, not at the last
count seen while tuning."""

from __future__ import annotations

import io

from rich.console import Console

from tunefarm.cli.job_display import JobProgressDisplay, JobSnapshot


def _snapshot(state: str, message: str, done: int) -> JobSnapshot:
    return JobSnapshot(state, message, done, 64, "best — · 1 worker")


def test_the_bar_ends_at_the_final_count() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    display = JobProgressDisplay(console, "job1", label="tuning")
    display.show(_snapshot("tuning", "timing default schedules", 0))
    display.show(_snapshot("tuning", "tuning 5 tasks", 59))
    bar = display._bar
    progress = display._progress
    assert progress is not None
    display.show(_snapshot("building", "building with the best records", 64))
    assert progress.tasks[bar].completed == 64
    assert display._progress is None
    assert "job job1: tuning — timing default schedules" in out.getvalue()
