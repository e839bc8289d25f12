"""SQLAlchemy 2 models of the tuning database.

One row per workload (a TIR function to tune) with its operator signature (the similarity
index), one row per target fingerprint, and one row per measured schedule of a workload on a
target. The untuned baseline latency of each model compiled, and the timings of vendor calls
against tuned kernels. Jobs, and for the HTTP API the teams, their tokens and their uploaded
models. The migrations in ``tuning_db/migrations`` create exactly these tables; a test
compares the two.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class WorkloadRow(Base):
    __tablename__ = "workloads"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    """sha256 of the workload's canonical TVMScript (see ``workload_key.py``): the same on every
    process and machine, unlike TVM's structural hash."""
    mod_json: Mapped[str] = mapped_column(Text)
    """The workload IRModule as ``tvm.ir.save_json`` writes it, so records can be rebuilt."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class WorkloadSignatureRow(Base):
    """The operator signature of a workload (``operator_signature.py``): the similarity index."""

    __tablename__ = "workload_signatures"
    __table_args__ = (
        # A similarity lookup reads one family in size order, both ways from the new workload.
        Index("ix_workload_signatures_family_size", "family_key", "size_log2"),
    )

    workload_id: Mapped[int] = mapped_column(
        ForeignKey("workloads.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    family_key: Mapped[str] = mapped_column(String(64))
    """sha256 of what must match for one workload's trace to apply to another: operator kind,
    dtypes, layout, axis roles and block names."""
    kind: Mapped[str] = mapped_column(String(32))
    """``conv``, ``dense``, ``pool``, ... (``OperatorKind``); for reading, not for lookups."""
    size_log2: Mapped[float] = mapped_column(Float)
    """log2 of the anchor block's iteration count. Workloads within distance d of one another
    differ here by at most sqrt(rank) * d, so a lookup is a range scan of the index."""
    signature_json: Mapped[str] = mapped_column(Text)
    """The whole signature (shape vector, strides, blocks); the exact distance is computed from
    it on the few rows the range scan returns."""
    version: Mapped[int] = mapped_column(Integer)
    """``SIGNATURE_VERSION`` of the code that wrote the row (it is also in the family key)."""


class TargetRow(Base):
    __tablename__ = "targets"
    __table_args__ = (Index("ix_targets_class", "target_class", "tvm_version"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    """sha256 of ``fingerprint_json``: records are filed and queried under this key."""
    target_json: Mapped[str] = mapped_column(Text)
    """The TVM target JSON the records were measured with (without its host)."""
    fingerprint_json: Mapped[str] = mapped_column(Text)
    """Target JSON plus CPU features or GPU arch plus the TVM version."""
    target_class: Mapped[str] = mapped_column(String(255))
    """``cuda/sm_90``, ``llvm/<mcpu>/<features hash>`` (``target_fingerprint.target_class``):
    with the same ``tvm_version``, another fingerprint's records may be built as is."""
    tvm_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class TuningRecordRow(Base):
    __tablename__ = "tuning_records"
    __table_args__ = (
        # A redelivered measurement must not add a second row.
        UniqueConstraint("workload_id", "target_key", "trace_hash"),
        # top-k: filter on (workload, target) and read the index in mean_run_sec order.
        Index("ix_tuning_records_top_k", "workload_id", "target_key", "mean_run_sec"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workload_id: Mapped[int] = mapped_column(
        ForeignKey("workloads.id", ondelete="CASCADE"), index=True
    )
    target_key: Mapped[str] = mapped_column(ForeignKey("targets.key", ondelete="CASCADE"))
    trace_hash: Mapped[str] = mapped_column(String(64))
    """sha256 of ``trace_json``: the schedule's identity within a workload and target."""
    trace_json: Mapped[str] = mapped_column(Text)
    run_secs_json: Mapped[str] = mapped_column(Text)
    """The measured run times in seconds, as MetaSchedule reports them (1e10 marks a failure)."""
    mean_run_sec: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Mean of ``run_secs``; NULL when the candidate failed to build or run."""
    args_info_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    team_id: Mapped[int | None] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=True, index=True
    )
    """The team that imported the record; NULL for records our own workers measured (the
    organisation's) and for the operator's local imports."""
    verified: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    """False while ``run_secs`` is only a client's claim (an API import). Unverified records are
    never used to build and never count as coverage, until a worker has measured them."""
    shared: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Promoted by its team: every team of the organisation sees it."""


class UntunedBaselineRow(Base):
    """The latency of a model built without tuning records, measured once and reused.

    A compile reports its speedup over this baseline; timing an untuned build of a large model
    takes minutes, so it is measured once per model, target fingerprint and pipeline.
    """

    __tablename__ = "untuned_baselines"

    model_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    """sha256 of the model as imported (external data inlined)."""
    target_key: Mapped[str] = mapped_column(
        ForeignKey("targets.key", ondelete="CASCADE"), primary_key=True
    )
    pipeline_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    """sha256 of ``pipeline_json``."""
    pipeline_json: Mapped[str] = mapped_column(Text)
    """What the untuned build depends on besides the model and target: the pass pipeline's name
    and phases, layout, fp16, CUDA graph, and the version of tunefarm's untuned build."""
    p50_ms: Mapped[float] = mapped_column(Float)
    p90_ms: Mapped[float] = mapped_column(Float)
    p99_ms: Mapped[float] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer)
    calls_per_sample: Mapped[int] = mapped_column(Integer)
    budget_reached: Mapped[bool] = mapped_column(Boolean)
    """The time box ended the timing (a slow model: few samples)."""
    measured_on: Mapped[str] = mapped_column(String(255))
    """The host that measured it (another host of the same fingerprint may read it)."""
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class VendorTimingRow(Base):
    """One side of a chain's vendor choice (issue 17), timed on a GPU of the target fingerprint.

    A chain (a convolution or matmul with its epilogue) runs either as a vendor call or as its
    tuned TVM kernel, whichever was faster when both were timed in one CUDA graph. That timing
    builds and runs both sides; a later build for the same fingerprint reads it here instead.
    """

    __tablename__ = "vendor_timings"

    target_key: Mapped[str] = mapped_column(
        ForeignKey("targets.key", ondelete="CASCADE"), primary_key=True
    )
    chain_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    """sha256 of ``chain_json``."""
    side: Mapped[str] = mapped_column(String(16), primary_key=True)
    """``vendor`` (the call into our shim) or ``tuned`` (the chain's task with its record)."""
    source_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    """What was built: for the vendor side, a hash of the shim's sources; for the tuned side, of
    the task's workload key and its best record's time. Either changes, the side is timed anew."""
    chain_json: Mapped[str] = mapped_column(Text)
    """The call's function, input, weight and output types and its configuration."""
    seconds: Mapped[float] = mapped_column(Float)
    """Median seconds per call, in a one-call CUDA graph."""
    measured_on: Mapped[str] = mapped_column(String(255))
    """The host and GPU that measured it."""
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class TeamRow(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    """Only the hash is stored: a leaked database gives no usable token."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class ModelRow(Base):
    __tablename__ = "models"
    __table_args__ = (
        # The same bytes uploaded twice by one team are the same model.
        UniqueConstraint("team_id", "sha256"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    """Hash of the uploaded bytes; the file is ``<data_dir>/models/<sha256>.onnx``, shared by
    every team that uploaded the same bytes."""
    name: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(Integer)
    summary_json: Mapped[str] = mapped_column(Text)
    """Opset, operators (with counts), inputs and outputs, read once at upload."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class ModelBlobRow(Base):
    """A model as jobs run it (external data inlined), by the sha256 of these bytes."""

    __tablename__ = "model_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    onnx: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    """queued → importing → tuning → building → succeeded | failed | cancelled."""
    model_name: Mapped[str] = mapped_column(String(255))
    model_sha256: Mapped[str] = mapped_column(String(64))
    """The model's bytes are the ``model_blobs`` row of this hash: stored once, however many
    jobs run it, so that a submit copies no model."""
    model_onnx: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """Jobs submitted before ``model_blobs`` (revision 0006) carry their model here."""
    options_json: Mapped[str] = mapped_column(Text)
    """Target, trials and pipeline options, as ``tunefarm compile`` takes them."""
    progress_json: Mapped[str] = mapped_column(Text, default="{}")
    """Per task: trials, best latency, the curve of best latency over trials; and which workers
    measured how many trials."""
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """``user`` for bad input the submitter can fix, ``internal`` for anything else."""
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """The coordinator running the job; it renews ``lease_expires_at`` while it lives."""
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """How many coordinators have started this job (more than one after a resume)."""
    manifest_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    library: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, onupdate=utc_now
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    team_id: Mapped[int | None] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=True, index=True
    )
    """The team that submitted the job through the API; NULL for the CLI's farm jobs."""
    model_id: Mapped[str | None] = mapped_column(
        ForeignKey("models.id", ondelete="SET NULL"), nullable=True
    )
