"""Re-measure claimed tuning records before a job may use them.

A record imported through the API carries a run time that only the importing team vouches for.
It is filed unverified, and the database never hands it to a search or a build. When a job
needs a workload that has such records, their schedules are measured here on the job's own
trial executor (the farm's measure workers, or a local warm pool), and the measured time is
filed as a verified record. The claimed time is discarded: a fake "1 ns" record can at best
contribute a schedule, timed by us.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import tvm
from tvm.s_tir import Schedule
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.database import TuningRecord
from tvm.target import Target

from tunefarm.tuner.tasks import TuningTask
from tunefarm.tuner.trial import MeasureSettings, TrialRequest, TrialResult
from tunefarm.tuner.trial_executor import TrialExecutor
from tunefarm.tuner.warm_pool import WarmPool
from tunefarm.tuning_db import SqlDatabase

logger = logging.getLogger(__name__)

CLAIM_TOLERANCE = 0.5
"""A claim more than this fraction faster than our measurement is logged as misleading."""


@dataclass
class VerificationReport:
    measured: int = 0
    failed: int = 0
    misleading_claims: list[str] = field(default_factory=list)
    """Task names whose claimed time was far below what our worker measured."""


def verify_claimed_records(
    tasks: list[TuningTask],
    *,
    database: SqlDatabase,
    target: Target,
    executor: TrialExecutor | None = None,
    settings: MeasureSettings | None = None,
    timeout_sec: float = 60.0,
) -> VerificationReport:
    """Measure every unverified record of ``tasks`` and file the measurement, verified.

    Without an ``executor`` a one-process local warm pool is started, only if there is
    something to measure.
    """
    claimed = [(task, record) for task in tasks for record in database.unverified_records(task.mod)]
    report = VerificationReport()
    if not claimed:
        return report
    with contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(WarmPool(1, timeout_sec=timeout_sec))
        requests = []
        for _task, record in claimed:
            requests.append(trial_request_for_record(record, target, settings or MeasureSettings()))
        handles = executor.submit([request for request in requests if request is not None])
        results = iter(handle.result() for handle in handles)
        for (task, record), request in zip(claimed, requests, strict=True):
            result = next(results) if request is not None else _unreplayable()
            _file(database, record, result, target)
            if result.run_secs is None:
                report.failed += 1
                continue
            report.measured += 1
            claimed_sec = _mean([float(sec) for sec in record.run_secs or []])
            measured_sec = _mean(result.run_secs)
            if (
                claimed_sec is not None
                and measured_sec is not None
                and claimed_sec < measured_sec * (1 - CLAIM_TOLERANCE)
            ):
                logger.warning(
                    "task %s: a record claimed %.3g s, our worker measured %.3g s",
                    task.name,
                    claimed_sec,
                    measured_sec,
                )
                report.misleading_claims.append(task.name)
    logger.info(
        "re-measured %d claimed records (%d failed)", report.measured + report.failed, report.failed
    )
    return report


def trial_request_for_record(
    record: TuningRecord, target: Target, settings: MeasureSettings
) -> TrialRequest | None:
    """The record's schedule as a trial, or None if its trace does not apply to its workload."""
    try:
        schedule = Schedule(record.workload.mod)
        record.trace.apply_to_schedule(schedule, remove_postproc=False)
        args_info = record.args_info or ArgInfo.from_entry_func(schedule.mod)
        return TrialRequest(
            mod_json=tvm.ir.save_json(schedule.mod),
            target_json=str(target),
            args_info=[info.as_json() for info in args_info],
            settings=settings,
        )
    except Exception:  # a client's trace: anything may be wrong with it
        logger.warning("a claimed record's trace does not apply to its workload", exc_info=True)
        return None


def _unreplayable() -> TrialResult:
    return TrialResult(None, "the trace does not apply to its workload")


def _file(database: SqlDatabase, record: TuningRecord, result: TrialResult, target: Target) -> None:
    # A failed measurement is filed too: the record becomes verified with no run time, so it
    # is never used and never measured again.
    database.commit_tuning_record(
        TuningRecord(record.trace, record.workload, result.run_secs, target, record.args_info)
    )


def _mean(run_secs: list[float]) -> float | None:
    return sum(run_secs) / len(run_secs) if run_secs else None
