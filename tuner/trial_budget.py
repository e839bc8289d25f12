"""How a compile spreads its trials over the tasks: where the time is, and where there is room.

A task's claim on the budget is its estimated share of the model's time, ``weight x best run
time`` (or, before anything of it was measured, its FLOPs at the rate the measured tasks run),
discounted by the trials already spent on its workload: ``1 / sqrt(1 + spent / 64)``. Trials
follow that claim. A task whose claim is worth fewer than ``MIN_TASK_TRIALS`` gets none (a
search of two or three candidates is a random sample), unless no task reaches it; then the
heaviest task takes what there is. A task with a single possible schedule spends one trial
whatever its share: its search has nothing more to propose, and ``tuner.search.tune`` hands
the rest of its share to the other tasks in its next round.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MIN_TASK_TRIALS = 8
"""Fewer trials than this are not a search; the task keeps its best record instead."""
ROOM_SCALE = 64.0
"""Trials after which a task's claim is discounted by a factor of sqrt(2)."""


@dataclass(frozen=True)
class TaskOutlook:
    """What the allocation knows about one task."""

    name: str
    weight: int
    flops: float
    best_sec: float | None
    """Its best measured run time (a default schedule's, a record's), if any."""
    spent: int = 0
    """Trials already measured on its workload for this target, by any job."""

    @property
    def room(self) -> float:
        return 1.0 / math.sqrt(1.0 + self.spent / ROOM_SCALE)


def estimated_times(tasks: Sequence[TaskOutlook]) -> dict[str, float]:
    """Each task's estimated share of the model's time in seconds (weight x run time)."""
    rates = [
        task.flops / task.best_sec
        for task in tasks
        if task.best_sec is not None and task.best_sec > 0 and task.flops > 0
    ]
    # Unmeasured tasks are priced at the median rate of the measured ones; with none measured,
    # FLOPs are the only yardstick (any common rate gives the same proportions).
    rate = statistics.median(rates) if rates else 1.0
    times = {}
    for task in tasks:
        sec = task.best_sec if task.best_sec is not None else task.flops / rate
        times[task.name] = max(0.0, sec) * task.weight
    return times


def allocate_trials(
    tasks: Sequence[TaskOutlook],
    total: int,
    *,
    max_per_task: int | None = None,
    minimum: int = MIN_TASK_TRIALS,
) -> dict[str, int]:
    """Trials per task, adding up to at most ``total``, none above ``max_per_task``."""
    shares = {task.name: 0 for task in tasks}
    if total <= 0 or not tasks:
        return shares
    left = total
    times = estimated_times(tasks)
    claims = {task.name: times[task.name] * task.room for task in tasks if times[task.name] > 0}
    cap = max_per_task if max_per_task is not None else left
    ranked = sorted(claims, key=lambda name: (-claims[name], name))
    # Drop the smallest claims until every one left is worth a search.
    chosen = list(ranked)
    while chosen:
        whole = sum(claims[name] for name in chosen)
        smallest = chosen[-1]
        if left * claims[smallest] / whole >= min(minimum, left) or len(chosen) == 1:
            break
        chosen.pop()
    whole = sum(claims[name] for name in chosen)
    for name in chosen:
        # (the epsilon keeps 120 x 5/6 at 100 where floating point makes it 99.99...)
        shares[name] += min(cap, math.floor(left * claims[name] / whole + 1e-9))
    # What flooring and the cap left over goes to the largest claims that have room.
    spare = left - sum(shares[name] for name in chosen)
    for name in chosen:
        if spare <= 0:
            break
        extra = min(spare, cap - shares[name])
        shares[name] += max(0, extra)
        spare -= max(0, extra)
    return shares
