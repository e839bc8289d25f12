"""How much of a model the tuning database already covers for a target.

The tasks of a model are found the way a job finds them (import, pass pipeline, MetaSchedule's
task extraction), which takes seconds; they are kept per (model, target, layout, fp16) for the
life of the process. Which tasks are covered is read from the database on every call: only
verified records count, as in a build.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine

from tunefarm.tuner.targets import parse_target
from tunefarm.tuning_db.sql_database import best_verified_times
from tunefarm.tuning_db.target_fingerprint import fingerprint


@dataclass(frozen=True)
class ModelTask:
    name: str
    workload_key: str
    weight: int
    flops: float


@dataclass(frozen=True)
class ModelTasks:
    target_fingerprint: str
    tasks: tuple[ModelTask, ...]


# TVM's passes are not meant to run in many threads at once; one analysis at a time.
_ANALYSIS_LOCK = threading.Lock()


def model_tasks(model_path: Path, target: str, *, layout: str, fp16: bool) -> ModelTasks:
    """The tuning tasks of the model file (cached; ``target`` must already parse)."""
    with _ANALYSIS_LOCK:
        analysed = _model_tasks.cache_info().currsize
        tasks = _model_tasks(str(model_path), target, layout, fp16)
        if _model_tasks.cache_info().currsize != analysed:
            # An analysis leaves a large heap of TVM objects behind; see ``tunefarm.api.app``.
            gc.freeze()
        return tasks


@lru_cache(maxsize=256)
def _model_tasks(model_path: str, target_text: str, layout: str, fp16: bool) -> ModelTasks:
    from tunefarm.tuner.model_analysis import analyse_model
    from tunefarm.tuning_db.workload_key import workload_key

    target = parse_target(target_text)
    tasks = analyse_model(
        Path(model_path),
        target=target,
        layout=layout,  # type: ignore[arg-type]
        fp16=fp16,
    ).tasks
    return ModelTasks(
        target_fingerprint=fingerprint(target).key,
        tasks=tuple(
            ModelTask(
                name=task.name,
                workload_key=workload_key(task.mod),
                weight=task.weight,
                flops=task.flops,
            )
            for task in tasks
        ),
    )


_recent: dict[tuple[int, str, tuple[str, ...]], tuple[float, dict[str, float]]] = {}


def best_times(
    engine: Engine, keys: list[str], target_key: str, *, max_age_sec: float = 0.0
) -> dict[str, float]:
    """Workload key → best verified run time on the target, for the keys that have one.

    ``max_age_sec``: an answer read that recently may be given again.
    """
    cache_key = (id(engine), target_key, tuple(keys))
    remembered = _recent.get(cache_key)
    if remembered is not None and time.monotonic() - remembered[0] < max_age_sec:
        return remembered[1]
    best = _read_best_times(engine, keys, target_key)
    if len(_recent) > 10_000:
        _recent.clear()
    _recent[cache_key] = (time.monotonic(), best)
    return best


def _read_best_times(engine: Engine, keys: list[str], target_key: str) -> dict[str, float]:
    # What a build would use: the fingerprint's own records, else its target class's (an
    # H100's records for an H200, the same TVM version).
    return best_verified_times(engine, keys, target_key)
