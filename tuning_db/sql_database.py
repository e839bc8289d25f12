"""``SqlDatabase``: a MetaSchedule database on SQLAlchemy, filed by target fingerprint.

MetaSchedule's search, its measure callbacks and ``MetaScheduleApplyDatabase`` use it directly.
Unlike TVM's own databases, every query is answered for one target fingerprint: ``get_top_k`` and
``get_all_tuning_records`` for the target the database is opened with, ``query_tuning_record``
for the target it is asked about. Another target's records are never returned.

Only verified records are ever returned: a record whose run time is a client's claim (imported
through the API) is invisible to the search and the build until a worker has measured it, and
``commit_tuning_record`` (a worker's measurement) then replaces the claim.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import tvm
import tvm_ffi
from sqlalchemy import Engine, func, select
from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.database import PyDatabase, TuningRecord, Workload
from tvm.target import Target

from tuning_db.engine import make_engine
from tuning_db.migrate import upgrade
from tuning_db.record_json import record_as_json, register_intrinsics_for
from tuning_db.schema import Base, TargetRow, TuningRecordRow, WorkloadRow
from tuning_db.target_fingerprint import TargetFingerprint, fingerprint
from tuning_db.upsert import insert_ignoring_duplicates, insert_measured_record
from tuning_db.workload_key import workload_key

# MetaSchedule writes this run time for a candidate that failed to build or run.
FAILED_RUN_SEC = 1e10

_workloads = Base.metadata.tables[WorkloadRow.__tablename__]
_targets = Base.metadata.tables[TargetRow.__tablename__]
_records = Base.metadata.tables[TuningRecordRow.__tablename__]


def open_engine(url: str) -> Engine:
    """An engine for ``url`` with the schema migrated to the newest revision."""
    engine = make_engine(url)
    upgrade(engine)
    return engine


def mean_run_sec(run_secs: list[float] | None) -> float | None:
    """The mean run time, or None for a failed measurement."""
    if not run_secs or any(sec >= FAILED_RUN_SEC for sec in run_secs):
        return None
    return sum(run_secs) / len(run_secs)


def trace_hash(trace_json: str) -> str:
    return hashlib.sha256(trace_json.encode()).hexdigest()


class WorkloadKeyCache:
    """Workload keys of modules this process has seen: keys cost a print of the IR."""

    def __init__(self) -> None:
        self._by_hash: dict[int, list[tuple[IRModule, str]]] = {}

    def key(self, mod: IRModule) -> str:
        bucket = self._by_hash.setdefault(tvm_ffi.structural_hash(mod), [])
        for known, key in bucket:
            if known.same_as(mod) or tvm_ffi.structural_equal(known, mod):
                return key
        key = workload_key(mod)
        bucket.append((mod, key))
        return key


@derived_object
class SqlDatabase(PyDatabase):
    """MetaSchedule database in SQL; ``target`` is the target the search runs for."""

    def __init__(self, url_or_engine: str | Engine, *, target: Target) -> None:
        super().__init__()
        if isinstance(url_or_engine, str):
            url_or_engine = open_engine(url_or_engine)
        self.engine: Engine = url_or_engine
        self.target = target
        self._keys = WorkloadKeyCache()
        self._workload_ids: dict[str, int] = {}
        self._known_targets: set[str] = set()
        self._target_fingerprint = self.register_target(target)

    # -- tunefarm's own API -------------------------------------------------------------

    @property
    def target_fingerprint(self) -> TargetFingerprint:
        return self._target_fingerprint

    def register_target(self, target: Target) -> TargetFingerprint:
        """File the target's fingerprint (once) and return it."""
        fp = fingerprint(target)
        if fp.key not in self._known_targets:
            with self.engine.begin() as connection:
                insert_ignoring_duplicates(
                    connection,
                    _targets,
                    {
                        "key": fp.key,
                        "target_json": fp.target_json,
                        "fingerprint_json": fp.fingerprint_json,
                    },
                )
            self._known_targets.add(fp.key)
        return fp

    def workload_key(self, mod: IRModule) -> str:
        return self._keys.key(mod)

    def best_run_sec(self, mod: IRModule, target: Target | None = None) -> float | None:
        """Mean run time of the best valid record of ``mod`` on ``target``, without TVM objects."""
        workload_id = self._find_workload_id(self._keys.key(mod))
        if workload_id is None:
            return None
        target_key = fingerprint(target or self.target).key
        with self.engine.connect() as connection:
            return connection.execute(
                select(func.min(_records.c.mean_run_sec)).where(
                    _records.c.workload_id == workload_id,
                    _records.c.target_key == target_key,
                    _records.c.mean_run_sec.is_not(None),
                    _records.c.verified.is_(True),
                )
            ).scalar()

    # -- MetaSchedule's Database interface ---------------------------------------------------

    def has_workload(self, mod: IRModule) -> bool:
        return self._find_workload_id(self._keys.key(mod)) is not None

    def commit_workload(self, mod: IRModule) -> Workload:
        key = self._keys.key(mod)
        if self._find_workload_id(key) is None:
            with self.engine.begin() as connection:
                insert_ignoring_duplicates(
                    connection, _workloads, {"key": key, "mod_json": tvm.ir.save_json(mod)}
                )
            self._find_workload_id(key)
        return Workload(mod)

    def commit_tuning_record(self, record: TuningRecord) -> None:
        """File a measurement of our own workers: a verified record.

        If a client imported the same schedule with a claimed run time, the measurement
        replaces the claim and the record becomes verified.
        """
        with self.engine.begin() as connection:
            insert_measured_record(connection, _records, self._record_values(record))

    def commit_claimed_record(self, record: TuningRecord, *, team_id: int) -> bool:
        """File a record whose run time only ``team_id`` vouches for (an API import).

        It stays unverified, so no search or build uses it, until a worker measures it. A
        schedule already in the database is left as it is. Returns whether a row was added.
        """
        values = {**self._record_values(record), "team_id": team_id, "verified": False}
        with self.engine.begin() as connection:
            before = connection.execute(
                select(func.count())
                .select_from(_records)
                .where(
                    _records.c.workload_id == values["workload_id"],
                    _records.c.target_key == values["target_key"],
                    _records.c.trace_hash == values["trace_hash"],
                )
            ).scalar_one()
            insert_ignoring_duplicates(connection, _records, values)
        return before == 0

    def unverified_records(self, mod: IRModule) -> list[TuningRecord]:
        """Records of ``mod`` on this database's target that no worker has measured yet."""
        workload_id = self._find_workload_id(self._keys.key(mod))
        if workload_id is None:
            return []
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(_records, _workloads.c.mod_json)
                .join(_workloads, _workloads.c.id == _records.c.workload_id)
                .where(
                    _records.c.workload_id == workload_id,
                    _records.c.target_key == self._target_fingerprint.key,
                    _records.c.verified.is_(False),
                )
                .order_by(_records.c.id)
            ).all()
        if not rows:
            return []
        workload = Workload(tvm.ir.load_json(rows[0].mod_json))
        return [self._to_record(row, workload, self.target) for row in rows]

    def _record_values(self, record: TuningRecord) -> dict[str, Any]:
        workload_id = self._require_workload_id(record.workload.mod)
        target = record.target if record.target is not None else self.target
        target_key = self.register_target(target).key
        trace_json, run_secs, _target_json, args_info = record_as_json(record)
        trace_text = json.dumps(trace_json, separators=(",", ":"))
        run_secs = [float(sec) for sec in run_secs] if run_secs is not None else None
        return {
            "workload_id": workload_id,
            "target_key": target_key,
            "trace_hash": trace_hash(trace_text),
            "trace_json": trace_text,
            "run_secs_json": json.dumps(run_secs if run_secs is not None else [FAILED_RUN_SEC]),
            "mean_run_sec": mean_run_sec(run_secs),
            "args_info_json": json.dumps(args_info) if args_info is not None else None,
        }

    def get_top_k(self, workload: Workload, top_k: int) -> list[TuningRecord]:
        if top_k < 0:
            raise ValueError("top_k must be non-negative")
        workload_id = self._find_workload_id(self._keys.key(workload.mod))
        if top_k == 0 or workload_id is None:
            return []
        rows = self._top_rows(workload_id, self._target_fingerprint.key, top_k)
        return [self._to_record(row, workload, self.target) for row in rows]

    def get_all_tuning_records(self) -> list[TuningRecord]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(_records, _workloads.c.mod_json)
                .join(_workloads, _workloads.c.id == _records.c.workload_id)
                .where(
                    _records.c.target_key == self._target_fingerprint.key,
                    _records.c.verified.is_(True),
                )
                .order_by(_records.c.id)
            ).all()
        workloads: dict[int, Workload] = {}
        records = []
        for row in rows:
            if row.workload_id not in workloads:
                workloads[row.workload_id] = Workload(tvm.ir.load_json(row.mod_json))
            records.append(self._to_record(row, workloads[row.workload_id], self.target))
        return records

    def query_tuning_record(
        self, mod: IRModule, target: Target, workload_name: str | None = None
    ) -> TuningRecord | None:
        workload_id = self._find_workload_id(self._keys.key(mod))
        if workload_id is None:
            return None
        rows = self._top_rows(workload_id, fingerprint(target).key, 1)
        if not rows:
            return None
        with self.engine.connect() as connection:
            mod_json = connection.execute(
                select(_workloads.c.mod_json).where(_workloads.c.id == workload_id)
            ).scalar_one()
        # The stored module is the one the trace was recorded on; MetaScheduleApplyDatabase
        # replays the trace on it and keeps the caller's attributes.
        return self._to_record(rows[0], Workload(tvm.ir.load_json(mod_json)), target)

    def __len__(self) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count())
                    .select_from(_records)
                    .where(_records.c.target_key == self._target_fingerprint.key)
                ).scalar_one()
            )

    # -- helpers ------------------------------------------------------------------------

    def _find_workload_id(self, key: str) -> int | None:
        cached = self._workload_ids.get(key)
        if cached is not None:
            return cached
        with self.engine.connect() as connection:
            found = connection.execute(
                select(_workloads.c.id).where(_workloads.c.key == key)
            ).scalar()
        if found is not None:
            self._workload_ids[key] = int(found)
        return found

    def _require_workload_id(self, mod: IRModule) -> int:
        key = self._keys.key(mod)
        workload_id = self._find_workload_id(key)
        if workload_id is None:
            self.commit_workload(mod)
            workload_id = self._find_workload_id(key)
        assert workload_id is not None
        return workload_id

    def _top_rows(self, workload_id: int, target_key: str, limit: int) -> list[Any]:
        # Served by ix_tuning_records_top_k: (workload_id, target_key, mean_run_sec). A claimed
        # run time (unverified) must never win a search or a build.
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(_records)
                    .where(
                        _records.c.workload_id == workload_id,
                        _records.c.target_key == target_key,
                        _records.c.mean_run_sec.is_not(None),
                        _records.c.verified.is_(True),
                    )
                    .order_by(_records.c.mean_run_sec, _records.c.id)
                    .limit(limit)
                ).all()
            )

    @staticmethod
    def _to_record(row: Any, workload: Workload, target: Target) -> TuningRecord:
        register_intrinsics_for(row.trace_json)
        record_json = [
            json.loads(row.trace_json),
            json.loads(row.run_secs_json),
            json.loads(str(target)),
            json.loads(row.args_info_json) if row.args_info_json is not None else None,
        ]
        return TuningRecord.from_json(record_json, workload)
