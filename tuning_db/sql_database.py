"""``SqlDatabase``: a MetaSchedule database on SQLAlchemy, filed by target fingerprint.

MetaSchedule's search, its measure callbacks and ``MetaScheduleApplyDatabase`` use it directly.
Unlike TVM's own databases, every query is answered for one target: ``get_top_k`` for the target
the database is opened with, ``query_tuning_record`` for the target it is asked about. They
return the records of the target's own fingerprint; failing those, the records of the same
*target class* measured with the same TVM version (an H100's records for an H200, see
``target_fingerprint.py``); ``best_record_origin`` says which it was. A record of another
architecture or TVM version is never returned by them. ``get_all_tuning_records`` and ``len``
count the own fingerprint only.

Only verified records are ever returned: a record whose run time is a client's claim (imported
through the API) is invisible to the search and the build until a worker has measured it, and
``commit_tuning_record`` (a worker's measurement) then replaces the claim.

``similar_records`` and ``nearest_workloads`` are the similarity index's lookups: records of
workloads of the same operator family on any target of the same kind, which may only seed a
search (``similar_records.py``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import tvm
import tvm_ffi
from sqlalchemy import ColumnElement, Connection, Engine, Exists, func, select, union_all
from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.database import PyDatabase, TuningRecord, Workload
from tvm.target import Target

from tunefarm.tuning_db.engine import make_engine
from tunefarm.tuning_db.migrate import upgrade
from tunefarm.tuning_db.operator_signature import OperatorSignature, operator_signature
from tunefarm.tuning_db.record_json import record_as_json, register_intrinsics_for
from tunefarm.tuning_db.schema import (
    Base,
    TargetRow,
    TuningRecordRow,
    WorkloadRow,
    WorkloadSignatureRow,
)
from tunefarm.tuning_db.similar_records import SimilarRecord, TargetRelation
from tunefarm.tuning_db.similarity_index import nearest_workloads, signature_values
from tunefarm.tuning_db.target_fingerprint import TargetFingerprint, fingerprint
from tunefarm.tuning_db.upsert import insert_ignoring_duplicates, insert_measured_records
from tunefarm.tuning_db.workload_key import workload_key

# MetaSchedule writes this run time for a candidate that failed to build or run.
FAILED_RUN_SEC = 1e10

_workloads = Base.metadata.tables[WorkloadRow.__tablename__]
_targets = Base.metadata.tables[TargetRow.__tablename__]
_records = Base.metadata.tables[TuningRecordRow.__tablename__]
_signatures = Base.metadata.tables[WorkloadSignatureRow.__tablename__]

_RELATION_ORDER: dict[str, int] = {"same": 0, "class": 1, "other": 2}


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


def best_verified_times(
    engine: Engine, workload_keys: list[str], target_key: str
) -> dict[str, float]:
    """Workload key → the run time an exact query on the fingerprint ``target_key`` returns.

    The best verified record of that fingerprint, else of its target class with the same TVM
    version (as ``SqlDatabase.query_tuning_record``); keys without either are left out.
    """
    if not workload_keys:
        return {}
    with engine.connect() as connection:
        own = connection.execute(
            select(_targets.c.target_class, _targets.c.tvm_version).where(
                _targets.c.key == target_key
            )
        ).first()
        target_keys = [target_key]
        if own is not None:
            target_keys += connection.execute(
                select(_targets.c.key).where(
                    _targets.c.target_class == own.target_class,
                    _targets.c.tvm_version == own.tvm_version,
                    _targets.c.key != target_key,
                )
            ).scalars()
        rows = connection.execute(
            select(_workloads.c.key, _records.c.target_key, func.min(_records.c.mean_run_sec))
            .join(_records, _records.c.workload_id == _workloads.c.id)
            .where(
                _workloads.c.key.in_(workload_keys),
                _records.c.target_key.in_(target_keys),
                _records.c.mean_run_sec.is_not(None),
                _records.c.verified.is_(True),
            )
            .group_by(_workloads.c.key, _records.c.target_key)
        ).all()
    own_best: dict[str, float] = {}
    class_best: dict[str, float] = {}
    for key, row_target_key, best in rows:
        chosen = own_best if row_target_key == target_key else class_best
        chosen[key] = min(float(best), chosen.get(key, float("inf")))
    return {**class_best, **own_best}


def file_target(connection: Connection, fp: TargetFingerprint) -> None:
    """Insert the target's row unless it is there."""
    insert_ignoring_duplicates(
        connection,
        _targets,
        {
            "key": fp.key,
            "target_json": fp.target_json,
            "fingerprint_json": fp.fingerprint_json,
            "target_class": fp.target_class,
            "tvm_version": fp.tvm_version,
        },
    )


def file_workload(connection: Connection, mod: IRModule, *, key: str) -> int:
    """The id of the workload ``key``; a new one is filed with its operator signature."""
    found = connection.execute(select(_workloads.c.id).where(_workloads.c.key == key)).scalar()
    if found is not None:
        return int(found)
    insert_ignoring_duplicates(
        connection, _workloads, {"key": key, "mod_json": tvm.ir.save_json(mod)}
    )
    workload_id = int(
        connection.execute(select(_workloads.c.id).where(_workloads.c.key == key)).scalar_one()
    )
    insert_ignoring_duplicates(
        connection, _signatures, signature_values(workload_id, mod, workload_key=key)
    )
    return workload_id


def record_values(workload_id: int, target_key: str, record_json: list[Any]) -> dict[str, Any]:
    """The ``tuning_records`` row of a record in its JSON form ``[trace, run_secs, target,
    args_info]`` (``record_as_json``, or a line of MetaSchedule's JSON database)."""
    trace_json, run_secs, _target_json, args_info = record_json
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


def has_valid_records(workload_id: ColumnElement[int], target_keys: list[str]) -> Exists:
    """EXISTS a valid record of the workload on one of the targets (an index probe of
    ix_tuning_records_top_k: workload_id, target_key, mean_run_sec)."""
    return (
        select(_records.c.id)
        .where(
            _records.c.workload_id == workload_id,
            _records.c.target_key.in_(target_keys),
            _records.c.mean_run_sec.is_not(None),
        )
        .exists()
    )


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


@dataclass(frozen=True)
class RecordOrigin:
    """Where the record an exact query returns was measured."""

    relation: Literal["same", "class"]
    """``same``: this fingerprint; ``class``: another machine of the target class, same TVM."""
    target_key: str
    target_json: str
    target_class: str
    mean_run_sec: float


@dataclass(frozen=True)
class NearestWorkload:
    """A workload of the same family with records that can seed a search (a coverage line)."""

    workload_key: str
    distance: float
    """0.0 for the workload itself (measured only elsewhere, or only claimed)."""
    best_run_sec: float | None
    """Its best verified run time on this target's fingerprint or class (same TVM version);
    None when its records are all of other classes or TVM versions, or unverified."""


@dataclass(frozen=True)
class _KnownTarget:
    key: str
    target_json: str
    target_class: str
    relation: TargetRelation


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
        self._signatures: dict[str, OperatorSignature] = {}
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
                file_target(connection, fp)
            self._known_targets.add(fp.key)
        return fp

    def workload_key(self, mod: IRModule) -> str:
        return self._keys.key(mod)

    def best_run_sec(self, mod: IRModule, target: Target | None = None) -> float | None:
        """Mean run time of the record an exact query of ``mod`` on ``target`` returns."""
        origin = self.best_record_origin(mod, target)
        return origin.mean_run_sec if origin is not None else None

    def best_record_origin(
        self, mod: IRModule, target: Target | None = None
    ) -> RecordOrigin | None:
        """Where the best record of ``mod`` for ``target`` (default: this database's) comes from.

        None when there is no exact hit: no verified record of this fingerprint nor of its
        class with this TVM version.
        """
        workload_id = self._find_workload_id(self._keys.key(mod))
        if workload_id is None:
            return None
        rows, relation = self._exact_rows(workload_id, fingerprint(target or self.target), 1)
        if not rows or relation is None:
            return None
        with self.engine.connect() as connection:
            target_row = connection.execute(
                select(_targets).where(_targets.c.key == rows[0].target_key)
            ).one()
        return RecordOrigin(
            relation=relation,
            target_key=str(target_row.key),
            target_json=str(target_row.target_json),
            target_class=str(target_row.target_class),
            mean_run_sec=float(rows[0].mean_run_sec),
        )

    def best_record_relation(self, mod: IRModule) -> TargetRelation | None:
        """``same`` or ``class`` for an exact hit of ``mod`` on this target; None for a miss."""
        origin = self.best_record_origin(mod)
        return origin.relation if origin is not None else None

    def signature(self, mod: IRModule) -> OperatorSignature:
        """The operator signature of a workload module (cached per workload key)."""
        key = self._keys.key(mod)
        cached = self._signatures.get(key)
        if cached is None:
            cached = self._signatures[key] = operator_signature(mod)
        return cached

    def similar_records(
        self, mod: IRModule, *, workloads: int = 4, per_workload: int = 8
    ) -> list[SimilarRecord]:
        """Records that may seed a search of ``mod`` on this database's target.

        The ``workloads`` nearest workloads of the same operator family that have valid
        records on a target of the same kind (``per_workload`` of the best of each), plus the
        records of ``mod`` itself that are not exact hits (measured on another architecture or
        TVM version, or only claimed), at distance 0. Records of other teams and unverified ones
        are included and flagged: a seed only proposes a schedule that our workers measure.
        Ordered by distance, then target relation, then run time.
        """
        own_id = self._find_workload_id(self._keys.key(mod))
        signature = self.signature(mod)
        with self.engine.connect() as connection:
            targets = self._targets_of_kind(connection)
            if not targets:
                return []
            distances = self._neighbour_distances(connection, signature, own_id, targets, workloads)
            if own_id is not None:
                distances[own_id] = 0.0
            if not distances:
                return []
            rows = self._seed_rows(connection, distances, own_id, targets, per_workload)
            modules = self._workload_modules(connection, {row.workload_id for row in rows})
        similar = [
            SimilarRecord(
                record=self._to_record_json(
                    row,
                    modules[row.workload_id][1],
                    json.loads(targets[row.target_key].target_json),
                ),
                workload_key=modules[row.workload_id][0],
                distance=distances[row.workload_id],
                target_relation=targets[row.target_key].relation,
                mean_run_sec=float(row.mean_run_sec),
                verified=bool(row.verified),
                team_id=row.team_id,
                target_class=targets[row.target_key].target_class,
            )
            for row in rows
        ]
        return sorted(
            similar,
            key=lambda s: (s.distance, _RELATION_ORDER[s.target_relation], s.mean_run_sec),
        )

    def seed_workloads(self, mod: IRModule, *, workloads: int = 4) -> dict[str, float]:
        """Workload key → distance of the workloads whose records ``similar_records`` (with
        ``per_workload`` of 1 or more) would offer as seeds, without reading a record.

        A record is built by replaying its trace, and a tensor-core trace needs TVM's tensor
        intrinsics registered (an import of 10 s to minutes); a plan needs only how many
        workloads there are and how near.
        """
        own_id = self._find_workload_id(self._keys.key(mod))
        signature = self.signature(mod)
        with self.engine.connect() as connection:
            targets = self._targets_of_kind(connection)
            if not targets:
                return {}
            distances = self._neighbour_distances(connection, signature, own_id, targets, workloads)
            if own_id is not None and self._has_seed_records(connection, own_id, targets):
                distances[own_id] = 0.0
            keys = self._workload_keys(connection, list(distances))
        return {keys[workload_id]: distance for workload_id, distance in distances.items()}

    def nearest_workloads(self, mod: IRModule, *, limit: int = 3) -> list[NearestWorkload]:
        """The workloads whose records could seed a search of ``mod``, nearest first.

        As ``similar_records`` chooses them (``mod`` itself first when it has records that are
        not exact hits), each with its best verified run time on this fingerprint or class.
        """
        own_id = self._find_workload_id(self._keys.key(mod))
        signature = self.signature(mod)
        with self.engine.connect() as connection:
            targets = self._targets_of_kind(connection)
            if not targets:
                return []
            found: list[tuple[int, float]] = []
            if own_id is not None and self._has_seed_records(connection, own_id, targets):
                found.append((own_id, 0.0))
            neighbours = self._neighbour_distances(
                connection, signature, own_id, targets, limit - len(found)
            )
            found += neighbours.items()
            if not found:
                return []
            ids = [workload_id for workload_id, _ in found]
            keys = self._workload_keys(connection, ids)
            exact_keys = [key for key, t in targets.items() if t.relation != "other"]
            best = dict(
                connection.execute(
                    select(_records.c.workload_id, func.min(_records.c.mean_run_sec))
                    .where(
                        _records.c.workload_id.in_(ids),
                        _records.c.target_key.in_(exact_keys),
                        _records.c.mean_run_sec.is_not(None),
                        _records.c.verified.is_(True),
                    )
                    .group_by(_records.c.workload_id)
                ).all()
            )
        return [
            NearestWorkload(
                workload_key=str(keys[workload_id]),
                distance=distance,
                best_run_sec=float(best[workload_id])
                if best.get(workload_id) is not None
                else None,
            )
            for workload_id, distance in found
        ]

    # -- MetaSchedule's Database interface ---------------------------------------------------

    def has_workload(self, mod: IRModule) -> bool:
        return self._find_workload_id(self._keys.key(mod)) is not None

    def commit_workload(self, mod: IRModule) -> Workload:
        """File the workload and, in the same transaction, its operator signature."""
        key = self._keys.key(mod)
        if self._find_workload_id(key) is None:
            with self.engine.begin() as connection:
                self._workload_ids[key] = file_workload(connection, mod, key=key)
        return Workload(mod)

    def commit_tuning_record(self, record: TuningRecord) -> None:
        """File a measurement of our own workers: a verified record.

        If a client imported the same schedule with a claimed run time, the measurement
        replaces the claim and the record becomes verified.
        """
        with self.engine.begin() as connection:
            insert_measured_records(connection, _records, [self._record_values(record)])

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
        return record_values(workload_id, target_key, record_as_json(record))

    def get_top_k(self, workload: Workload, top_k: int) -> list[TuningRecord]:
        if top_k < 0:
            raise ValueError("top_k must be non-negative")
        workload_id = self._find_workload_id(self._keys.key(workload.mod))
        if top_k == 0 or workload_id is None:
            return []
        rows, _ = self._exact_rows(workload_id, self._target_fingerprint, top_k)
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
        rows, _ = self._exact_rows(workload_id, fingerprint(target), 1)
        if not rows:
            return None
        with self.engine.connect() as connection:
            mod_json = connection.execute(
                select(_workloads.c.mod_json).where(_workloads.c.id == workload_id)
            ).scalar_one()
        # The stored module is the one the trace was recorded on; MetaScheduleApplyDatabase
        # replays the trace on it and keeps the caller's attributes.
        return self._to_record(rows[0], Workload(tvm.ir.load_json(mod_json)), target)

    def measured_count(self, mod: IRModule) -> int:
        """How many schedules of ``mod`` our workers measured on this target fingerprint,
        failures included: the trials already spent on the workload, whichever job spent them."""
        workload_id = self._find_workload_id(self._keys.key(mod))
        if workload_id is None:
            return 0
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count())
                    .select_from(_records)
                    .where(
                        _records.c.workload_id == workload_id,
                        _records.c.target_key == self._target_fingerprint.key,
                        _records.c.verified.is_(True),
                    )
                ).scalar_one()
            )

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

    def _exact_rows(
        self, workload_id: int, fp: TargetFingerprint, limit: int
    ) -> tuple[list[Any], Literal["same", "class"] | None]:
        """The best verified rows of the fingerprint, else of its class with the same TVM."""
        rows = self._top_rows(workload_id, [fp.key], limit)
        if rows:
            return rows, "same"
        with self.engine.connect() as connection:
            class_keys = list(
                connection.execute(
                    select(_targets.c.key).where(
                        _targets.c.target_class == fp.target_class,
                        _targets.c.tvm_version == fp.tvm_version,
                        _targets.c.key != fp.key,
                    )
                ).scalars()
            )
        rows = self._top_rows(workload_id, class_keys, limit) if class_keys else []
        return rows, ("class" if rows else None)

    def _top_rows(self, workload_id: int, target_keys: list[str], limit: int) -> list[Any]:
        # Served by ix_tuning_records_top_k: (workload_id, target_key, mean_run_sec). A claimed
        # run time (unverified) must never win a search or a build.
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(_records)
                    .where(
                        _records.c.workload_id == workload_id,
                        _records.c.target_key.in_(target_keys),
                        _records.c.mean_run_sec.is_not(None),
                        _records.c.verified.is_(True),
                    )
                    .order_by(_records.c.mean_run_sec, _records.c.id)
                    .limit(limit)
                ).all()
            )

    def _targets_of_kind(self, connection: Connection) -> dict[str, _KnownTarget]:
        """Every filed target of this database's target kind, with its relation to it."""
        fp = self._target_fingerprint
        kind = self.target.kind.name
        known = {}
        for row in connection.execute(
            select(
                _targets.c.key,
                _targets.c.target_json,
                _targets.c.target_class,
                _targets.c.tvm_version,
            ).where(_targets.c.target_class.startswith(f"{kind}/", autoescape=True))
        ):
            relation: TargetRelation = "other"
            if row.key == fp.key:
                relation = "same"
            elif row.target_class == fp.target_class and row.tvm_version == fp.tvm_version:
                relation = "class"
            known[str(row.key)] = _KnownTarget(
                str(row.key), str(row.target_json), str(row.target_class), relation
            )
        return known

    @staticmethod
    def _neighbour_distances(
        connection: Connection,
        signature: OperatorSignature,
        own_id: int | None,
        targets: dict[str, _KnownTarget],
        limit: int,
    ) -> dict[int, float]:
        """Workload id → distance of the ``limit`` nearest other workloads of the family with
        valid records on one of ``targets``, nearest first."""
        neighbours = nearest_workloads(
            connection,
            signature,
            limit=limit,
            exclude=[own_id] if own_id is not None else [],
            qualify=lambda workload_id: has_valid_records(workload_id, list(targets)),
        )
        return {neighbour.workload_id: neighbour.distance for neighbour in neighbours}

    @staticmethod
    def _workload_keys(connection: Connection, workload_ids: list[int]) -> dict[int, str]:
        if not workload_ids:
            return {}
        rows = connection.execute(
            select(_workloads.c.id, _workloads.c.key).where(_workloads.c.id.in_(workload_ids))
        ).all()
        return {int(row.id): str(row.key) for row in rows}

    @staticmethod
    def _seed_filter(workload_id: int, own_id: int | None, target: _KnownTarget) -> list[Any]:
        # The workload's own verified records on its fingerprint or class are exact hits: the
        # search has them already.
        if workload_id == own_id and target.relation != "other":
            return [_records.c.verified.is_(False)]
        return []

    def _has_seed_records(
        self, connection: Connection, own_id: int, targets: dict[str, _KnownTarget]
    ) -> bool:
        for target in targets.values():
            found = connection.execute(
                select(_records.c.id)
                .where(
                    _records.c.workload_id == own_id,
                    _records.c.target_key == target.key,
                    _records.c.mean_run_sec.is_not(None),
                    *self._seed_filter(own_id, own_id, target),
                )
                .limit(1)
            ).first()
            if found is not None:
                return True
        return False

    def _seed_rows(
        self,
        connection: Connection,
        distances: dict[int, float],
        own_id: int | None,
        targets: dict[str, _KnownTarget],
        per_workload: int,
    ) -> list[Any]:
        """The best ``per_workload`` seed rows of each workload (by relation, then run time).

        One statement: per (workload, target) pair, an index range of ix_tuning_records_top_k
        with a LIMIT, all pairs joined by UNION ALL.
        """
        if per_workload <= 0:
            return []
        columns = [
            _records.c.id,
            _records.c.workload_id,
            _records.c.target_key,
            _records.c.trace_json,
            _records.c.run_secs_json,
            _records.c.mean_run_sec,
            _records.c.args_info_json,
            _records.c.verified,
            _records.c.team_id,
        ]
        parts = [
            select(
                *select(*columns)
                .where(
                    _records.c.workload_id == workload_id,
                    _records.c.target_key == target.key,
                    _records.c.mean_run_sec.is_not(None),
                    *self._seed_filter(workload_id, own_id, target),
                )
                .order_by(_records.c.mean_run_sec, _records.c.id)
                .limit(per_workload)
                .subquery()
                .c
            )
            for workload_id in distances
            for target in targets.values()
        ]
        rows = connection.execute(union_all(*parts)).all() if parts else []
        by_workload: dict[int, list[Any]] = {}
        for row in rows:
            by_workload.setdefault(int(row.workload_id), []).append(row)
        kept = []
        for workload_rows in by_workload.values():
            workload_rows.sort(
                key=lambda row: (
                    _RELATION_ORDER[targets[row.target_key].relation],
                    row.mean_run_sec,
                    row.id,
                )
            )
            kept += workload_rows[:per_workload]
        return kept

    @staticmethod
    def _workload_modules(
        connection: Connection, workload_ids: set[int]
    ) -> dict[int, tuple[str, Workload]]:
        rows = connection.execute(
            select(_workloads.c.id, _workloads.c.key, _workloads.c.mod_json).where(
                _workloads.c.id.in_(sorted(workload_ids))
            )
        ).all()
        return {
            int(row.id): (str(row.key), Workload(tvm.ir.load_json(row.mod_json))) for row in rows
        }

    @staticmethod
    def _to_record(row: Any, workload: Workload, target: Target) -> TuningRecord:
        return SqlDatabase._to_record_json(row, workload, json.loads(str(target)))

    @staticmethod
    def _to_record_json(row: Any, workload: Workload, target_json: Any) -> TuningRecord:
        register_intrinsics_for(row.trace_json)
        record_json = [
            json.loads(row.trace_json),
            json.loads(row.run_secs_json),
            target_json,
            json.loads(row.args_info_json) if row.args_info_json is not None else None,
        ]
        return TuningRecord.from_json(record_json, workload)
