"""Where a tuning job's time goes: the coordinator's part and the measure workers' part.

The coordinator's seconds come from the tuning loop (``overlapped_search.LoopStats``); the
workers' are summed over the trials that came back, from what each ``TrialResult`` says.
Worker seconds add up over processes running at once, so they exceed the wall time on a pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunefarm.tuner.trial import TrialResult


@dataclass
class TrialTimes:
    """Sums over the trials that came back from the measure workers."""

    trials: int = 0
    queue_sec: float = 0.0
    """Sent until a measuring process took the trial up."""
    build_sec: float = 0.0
    run_sec: float = 0.0
    """Arguments, module load and timing."""
    device_wait_sec: float = 0.0
    """Waiting for the device while another process timed its candidate."""
    device_sec: float = 0.0
    """Holding the device to time (part of ``run_sec``): the GPU timer's busy time."""

    def add(self, result: TrialResult, *, sent_unix: float) -> None:
        self.trials += 1
        if result.started_unix:
            self.queue_sec += max(0.0, result.started_unix - sent_unix)
        self.build_sec += result.build_sec
        self.run_sec += result.measure_sec
        self.device_wait_sec += result.device_wait_sec
        self.device_sec += result.device_sec

    def as_dict(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "queue_sec": round(self.queue_sec, 2),
            "build_sec": round(self.build_sec, 2),
            "run_sec": round(self.run_sec, 2),
            "device_wait_sec": round(self.device_wait_sec, 2),
            "device_sec": round(self.device_sec, 2),
        }


def time_split(loop: Any, workers: TrialTimes) -> dict[str, Any]:
    """The job's split: the loop's ``LoopStats`` and the workers' ``TrialTimes``."""
    return {
        "coordinator": {
            "prepare_sec": round(loop.prepare_sec, 2),
            "search_sec": round(loop.search_sec, 2),
            "recording_sec": round(loop.recording_sec, 2),
            "waiting_sec": round(loop.waiting_sec, 2),
            "first_batch_sent_sec": round(loop.first_batch_sent_sec, 2)
            if loop.first_batch_sent_sec is not None
            else None,
            "failed_tasks": dict(loop.failed_tasks),
        },
        "workers": workers.as_dict(),
    }
