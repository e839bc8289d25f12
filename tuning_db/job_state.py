"""The states of a job, in one place: the job row, the coordinator, the API and the CLI."""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    QUEUED = "queued"
    IMPORTING = "importing"
    TUNING = "tuning"
    BUILDING = "building"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self.value in TERMINAL_JOB_STATES

    def __str__(self) -> str:
        return self.value


TERMINAL_JOB_STATES: tuple[str, ...] = (
    JobState.SUCCEEDED.value,
    JobState.FAILED.value,
    JobState.CANCELLED.value,
)
"""As plain strings: database drivers bind them (psycopg would write an Enum's name)."""
