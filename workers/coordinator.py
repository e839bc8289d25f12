"""The coordinator: runs one job end to end, holding a lease that a heartbeat renews.

MetaSchedule's search runs here; trials go to the measure workers through
``CeleryTrialExecutor``. If this process dies, the lease runs out and a reaper in another
coordinator sends the job back to the jobs queue. The next run starts over from the database:
tasks already tuned are reused, and the search of the others starts from their best records.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine

from tunefarm.tuner import overlapped_search
from tunefarm.tuner.compile_job import CompileOptions, Phase, compile_model
from tunefarm.tuner.coverage_plan import CoveragePlan
from tunefarm.tuner.errors import UserInputError
from tunefarm.tuner.job_spec import JobSpec
from tunefarm.tuner.search import TuningReport
from tunefarm.tuner.tasks import TuningTask
from tunefarm.tuner.time_split import time_split
from tunefarm.tuning_db import job_store
from tunefarm.tuning_db.job_progress import JobProgress, PlanCoverage, TaskProgress
from tunefarm.tuning_db.job_state import JobState
from tunefarm.workers.farm_executor import CeleryTrialExecutor

logger = logging.getLogger(__name__)

HEARTBEAT_SEC = 2.0
PROGRESS_EVERY_SEC = 0.5


class Heartbeat:
    """Renews the lease in the background and notices a cancel or a lost lease."""

    def __init__(
        self,
        engine: Engine,
        job_id: str,
        owner: str,
        executor: CeleryTrialExecutor,
        *,
        lease_sec: float,
    ) -> None:
        self.engine = engine
        self.job_id = job_id
        self.owner = owner
        self.executor = executor
        self.lease_sec = lease_sec
        self.cancelled = False
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SEC):
            try:
                cancel = job_store.renew(
                    self.engine, self.job_id, self.owner, lease_sec=self.lease_sec
                )
            except Exception:  # the database is away for a moment: try again next beat
                logger.exception("heartbeat of job %s failed", self.job_id)
                continue
            if cancel is None:
                self.lost = True
                self.executor.stop("the job's coordinator lost its lease")
                return
            if cancel:
                self.cancelled = True
                self.executor.stop("the job was cancelled")


class JobObserver:
    """Writes the phase and the tuning progress of the job as it goes."""

    def __init__(
        self,
        engine: Engine,
        job_id: str,
        owner: str,
        executor: CeleryTrialExecutor,
        *,
        resumed_from: JobProgress | None = None,
    ) -> None:
        self.engine = engine
        self.job_id = job_id
        self.owner = owner
        self.executor = executor
        # An earlier attempt's counts carry on: the job's progress covers every attempt.
        previous = resumed_from or JobProgress()
        self.progress = JobProgress(
            trials=previous.trials,
            tasks={name: task.model_copy(deep=True) for name, task in previous.tasks.items()},
            measured_by=dict(previous.measured_by),
            coverage=previous.coverage,
        )
        self._earlier = {name: task.model_copy() for name, task in previous.tasks.items()}
        self._earlier_total = previous.trials
        self._earlier_measured_by = Counter(previous.measured_by)
        self._written = 0.0

    def stage(self, phase: Phase, message: str) -> None:
        if phase is JobState.TUNING and self.executor.parallel_trials() is None:
            # Issue 19: a farm without a worker for the target was silent for 25 minutes.
            message += (
                f" (no live measure worker serves queue {self.executor.queue}: measurements "
                f"wait for one, and fail after {self.executor.queue_timeout_sec:.0f} s)"
            )
            logger.warning("job %s: %s", self.job_id, message)
        self.progress.message = message
        job_store.update_job(
            self.engine, self.job_id, self.owner, state=phase, progress=self.progress
        )

    def planned(self, plan: CoveragePlan) -> None:
        # The first attempt's plan is the coverage before tuning; a resumed attempt finds the
        # records the first one wrote.
        if self.progress.coverage is None:
            self.progress.coverage = PlanCoverage.model_validate(plan.as_dict())

    def tuning_started(self, total_trials: int, tasks: list[TuningTask]) -> None:
        self.progress.trials_total = self._earlier_total + total_trials
        for task in tasks:
            self.progress.tasks.setdefault(task.name, TaskProgress())
        self._write(force=True)

    def tuning_progress(self, report: TuningReport) -> None:
        self.progress.trials = self._earlier_total + report.trials
        for name, task in report.tasks.items():
            entry = self.progress.tasks.setdefault(name, TaskProgress())
            earlier = self._earlier.get(name, TaskProgress())
            entry.trials = earlier.trials + task.trials
            entry.failures = earlier.failures + task.failures
            best_us = round(task.best_sec * 1e6, 3) if task.best_sec is not None else None
            if best_us is not None and (entry.best_us is None or best_us < entry.best_us):
                entry.curve.append((entry.trials, best_us))
                entry.best_us = best_us
        self.progress.measured_by = dict(
            self._earlier_measured_by + Counter(self.executor.measured_by)
        )
        # This attempt's split (a resumed job starts it again).
        self.progress.time_split = time_split(
            overlapped_search.last_stats, self.executor.trial_times
        )
        self._write()
        if self.executor.stopped is not None:
            # Leaves MetaSchedule's loop at the next batch: no new trials are searched for.
            raise JobStopped(self.executor.stopped)

    def tuning_finished(self) -> None:
        self._write(force=True)

    def _write(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._written >= PROGRESS_EVERY_SEC:
            job_store.update_job(self.engine, self.job_id, self.owner, progress=self.progress)
            self._written = now


class JobStopped(Exception):
    """The job was cancelled, or its lease went to another coordinator."""


def run_job(
    job_id: str,
    *,
    engine: Engine,
    database_url: str,
    owner: str,
    make_executor: Any,
    lease_sec: float = 30.0,
) -> str:
    """Run the job if no live coordinator holds it; return its final state (or why not)."""
    if not job_store.claim(engine, job_id, owner, lease_sec=lease_sec):
        job = job_store.get_job(engine, job_id)
        return f"not claimed ({job.state if job else 'no such job'})"
    job = job_store.get_job(engine, job_id)
    assert job is not None
    try:
        spec = JobSpec.from_row(job.options)
    except ValidationError as err:
        # A row no spec reads (written by hand, or by a newer version): the job fails, clearly.
        job_store.finish(
            engine,
            job_id,
            owner,
            state=JobState.FAILED,
            error=f"the job's spec does not read: {err.errors()[0]['msg']}",
            error_kind="user",
        )
        return JobState.FAILED.value
    executor: CeleryTrialExecutor = make_executor(spec.tvm_target)
    with tempfile.TemporaryDirectory(prefix=f"tunefarm-job-{job_id}-") as scratch:
        model_path = Path(scratch) / job.model_name
        model_path.write_bytes(job_store.read_model(engine, job_id))
        compile_options = CompileOptions(
            model_path=model_path,
            spec=spec,
            out_dir=Path(scratch) / "out",
            database_url=database_url,
            # A resumed job goes on with the budget the dead coordinator had not spent.
            prior_trials={
                name: task.trials for name, task in job.progress.tasks.items() if task.trials > 0
            },
        )
        observer = JobObserver(engine, job_id, owner, executor, resumed_from=job.progress)
        with Heartbeat(engine, job_id, owner, executor, lease_sec=lease_sec) as heartbeat:
            try:
                result = compile_model(compile_options, observer=observer, executor=executor)
                if executor.unserved is not None:
                    raise UserInputError(executor.unserved)
            except Exception as err:
                # Bad input is the user's; so is a queue no worker serves, whatever broke after
                # the batches came back untaken.
                user_error = str(err) if isinstance(err, UserInputError) else executor.unserved
                if user_error is not None:
                    job_store.finish(
                        engine,
                        job_id,
                        owner,
                        state=JobState.FAILED,
                        error=user_error,
                        error_kind="user",
                    )
                    return "failed"
                if heartbeat.lost:
                    return "lease lost"
                if heartbeat.cancelled:
                    job_store.finish(engine, job_id, owner, state=JobState.CANCELLED)
                    return "cancelled"
                logger.error("job %s failed:\n%s", job_id, traceback.format_exc())
                job_store.finish(
                    engine,
                    job_id,
                    owner,
                    state=JobState.FAILED,
                    error=f"internal error: {type(err).__name__}: {err}",
                    error_kind="internal",
                )
                return "failed"
        job_store.finish(
            engine,
            job_id,
            owner,
            state=JobState.SUCCEEDED,
            manifest=result.manifest,
            library=result.library_path.read_bytes(),
        )
        return "succeeded"
