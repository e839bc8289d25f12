"""The API's request and response bodies."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunefarm.tuner.job_spec import JobOptions, JobSpec
from tunefarm.tuning_db.job_progress import PlanCoverage
from tunefarm.tuning_db.job_state import JobState


class _Body(BaseModel):
    # A misspelt option must not be ignored silently.
    model_config = ConfigDict(extra="forbid")


# -- models -------------------------------------------------------------------------------


class TensorInfo(BaseModel):
    name: str
    shape: list[int]
    dtype: str


class ModelOut(BaseModel):
    id: str
    name: str
    sha256: str
    size_bytes: int
    opset: int
    operators: dict[str, int]
    """Operator type → how many nodes of it."""
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    created_at: datetime


class TaskCoverage(BaseModel):
    name: str
    workload_key: str
    weight: int
    flops: float
    covered: bool
    best_latency_us: float | None


class Coverage(BaseModel):
    target: str
    target_fingerprint: str
    tasks_total: int
    tasks_covered: int
    tasks_percent: float
    flops_percent: float
    tasks: list[TaskCoverage]


class ModelDetail(ModelOut):
    coverage: Coverage | None = None
    """For the ``target`` asked for: which tasks the database already has verified records of."""
    coverage_state: Literal["ready", "pending"] | None = None
    """With a ``target``: "pending" while the model's tasks are being found, in a process of
    their own (seconds, the first time per model and target); ask again."""


class ModelList(BaseModel):
    items: list[ModelOut]
    next_offset: int | None


# -- jobs ---------------------------------------------------------------------------------


class JobSubmit(JobSpec):
    """A job: the model to compile and the spec every other front door uses too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(min_length=1, max_length=64)


class TaskProgress(BaseModel):
    name: str
    trials: int
    failures: int
    best_latency_us: float | None


class JobError(BaseModel):
    kind: str | None
    """``user`` for bad input the submitter can fix, ``internal`` for anything else."""
    message: str


class JobStatus(BaseModel):
    id: str
    state: JobState
    model_id: str | None
    model_name: str
    target: str
    trials: int
    options: JobOptions
    trials_done: int
    trials_total: int | None
    message: str | None
    tasks: list[TaskProgress]
    coverage: PlanCoverage | Coverage | None
    """The job's own plan (``PlanCoverage``: from the manifest once the job has one, else from
    its progress); before the plan exists, the database's coverage of the model now
    (``Coverage``, without its task list)."""
    estimated_latency_ms: float | None
    """Sum of the best kernel found so far of each task being tuned."""
    best_latency_ms: float | None
    """The library's measured p50, once the job has succeeded."""
    error: JobError | None
    cancel_requested: bool
    created_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None


class JobSummary(BaseModel):
    id: str
    state: JobState
    model_id: str | None
    model_name: str
    target: str
    trials: int
    trials_done: int
    trials_total: int | None = None
    """The trials the job's plan will run (below ``trials`` where tasks were covered)."""
    estimated_latency_ms: float | None = None
    """The best latency so far: the sum of the tasks' best times."""
    created_at: datetime | None
    error: str | None


class JobList(BaseModel):
    items: list[JobSummary]
    next_offset: int | None


# -- records ------------------------------------------------------------------------------


class RecordOut(BaseModel):
    id: int
    workload_key: str
    target_fingerprint: str
    target: dict[str, Any]
    run_secs: list[float] | None
    """Measured by our workers; None for a failed measurement or an unverified record."""
    claimed_run_secs: list[float] | None
    """An unverified record's run times, as its importer claimed them. Never used."""
    mean_run_sec: float | None
    verified: bool
    shared: bool
    mine: bool
    created_at: datetime | None


class RecordList(BaseModel):
    items: list[RecordOut]


WorkloadLine = tuple[str, str]
"""A line of MetaSchedule's ``database_workload.json``: ``[structural hash, base64 JSON]``."""

RecordLine = tuple[int, tuple[list[Any], list[float], dict[str, Any], list[Any] | None]]
"""A line of ``database_tuning_record.json``: ``[workload index, [trace, run_secs, target,
args_info]]``."""


class RecordsDocument(_Body):
    """MetaSchedule's JSON database: each list item is one line of its file."""

    workloads: list[WorkloadLine] = Field(max_length=10_000)
    records: list[RecordLine] = Field(max_length=100_000)

    @field_validator("records")
    @classmethod
    def _measured_times_only(cls, records: list[RecordLine]) -> list[RecordLine]:
        for number, (_index, (_trace, run_secs, _target, _args)) in enumerate(records):
            if not run_secs or any(not math.isfinite(s) or s <= 0 or s >= 1e10 for s in run_secs):
                raise ValueError(
                    f"record {number}: run_secs {run_secs!r} is not a measurement; every run "
                    "time must be a positive number of seconds below 1e10"
                )
        return records


class ImportResult(BaseModel):
    workloads: int
    records_added: int
    records_already_known: int
    verified: bool = False
    """Imported records stay unverified until a worker has measured them."""


RecordId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class PromoteRequest(_Body):
    record_ids: list[RecordId] = Field(min_length=1, max_length=10_000)


class PromoteResult(BaseModel):
    promoted: int
