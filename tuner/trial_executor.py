"""Where trials run: the interface between MetaSchedule's runner and the processes that measure.

``WarmPool`` runs trials in local warm processes; the farm's executor (``workers/``) sends them
to measure workers over Celery. Both hand back one ``TrialHandle`` per request. A handle never
raises: a crash, a hang or a lost worker comes back as a ``TrialResult`` with an error.
"""

from __future__ import annotations

from typing import Protocol

from tunefarm.tuner.trial import TrialRequest, TrialResult


class TrialHandle(Protocol):
    def done(self) -> bool:
        """Whether ``result()`` would return without waiting."""
        ...

    def result(self) -> TrialResult:
        """Wait for the trial; errors are in the result, never raised."""
        ...


class TrialExecutor(Protocol):
    def submit(self, requests: list[TrialRequest]) -> list[TrialHandle]:
        """Start every trial of a batch; one handle per request, in order."""
        ...

    def parallel_trials(self) -> int | None:
        """How many trials it builds at once (its processes), or None if it cannot say."""
        ...
