"""Tuning records as teams see them: query, export and import, promote to the organisation.

A team sees its own records, the records other teams promoted, and the organisation's: those
our workers measured. Imported records carry only a claim of their run time. They are filed
unverified and never used until a worker has measured them (``tuner/record_verification.py``):
a client can never write a run time that a build believes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from tunefarm.api.errors import InvalidInput, NotFound
from tunefarm.api.schemas import ImportResult, RecordLine, RecordList, RecordOut, RecordsDocument
from tunefarm.api.services.teams import Team
from tunefarm.tuner.targets import SUPPORTED_KINDS, parse_target
from tunefarm.tuning_db.schema import (
    TargetRow,
    TeamRow,
    TuningRecordRow,
    WorkloadRow,
    WorkloadSignatureRow,
)
from tunefarm.tuning_db.target_fingerprint import fingerprint


def visible_to(team: Team) -> ColumnElement[bool]:
    return or_(
        TuningRecordRow.team_id == team.id,
        TuningRecordRow.team_id.is_(None),
        TuningRecordRow.shared.is_(True),
    )


def query(
    engine: Engine,
    team: Team,
    *,
    workload_key: str | None,
    operator: str | None,
    target: str | None,
    top_k: int,
) -> RecordList:
    """The best ``top_k`` records by mean run time; verified ones before any claim."""
    statement = (
        select(
            *TuningRecordRow.__table__.c,
            WorkloadRow.key.label("workload_key"),
            TargetRow.target_json,
        )
        .join(WorkloadRow, WorkloadRow.id == TuningRecordRow.workload_id)
        .join(TargetRow, TargetRow.key == TuningRecordRow.target_key)
        .where(visible_to(team))
    )
    if workload_key is not None:
        statement = statement.where(WorkloadRow.key == workload_key)
    if operator is not None:
        # Block names come from the operator (conv2d_nchw, T_add...) and are in the module JSON.
        statement = statement.where(WorkloadRow.mod_json.contains(operator, autoescape=True))
    if target is not None:
        statement = statement.where(
            TuningRecordRow.target_key == fingerprint(parse_target(target)).key
        )
    statement = statement.order_by(
        TuningRecordRow.verified.desc(),
        TuningRecordRow.mean_run_sec.is_(None),
        TuningRecordRow.mean_run_sec,
        TuningRecordRow.id,
    ).limit(top_k)
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    return RecordList(items=[_record_out(row, team) for row in rows])


Scope = Literal["all", "mine", "promoted", "organisation"]


@dataclass(frozen=True)
class BrowsedRecord:
    """One record as the dashboard's records browser shows it."""

    id: int
    operator: str
    """The operator kind and anchor block (``conv conv2d_nhwc``), or "?" before it is indexed."""
    shape: list[int]
    target_class: str
    mean_run_us: float | None
    trials: int
    """Records of the same workload on the same target that the team may see."""
    source: str
    """"organisation" (our workers measured it), a team's name, or "yours"."""
    verified: bool
    shared: bool
    mine: bool
    created_at: datetime | None


def browse(
    engine: Engine,
    team: Team,
    *,
    operator: str | None,
    target_class: str | None,
    scope: Scope,
    limit: int,
    offset: int,
) -> list[BrowsedRecord]:
    """The records the team may see, fastest first, for the dashboard's records browser."""
    same_table = TuningRecordRow.__table__.alias("same_workload")
    trials_of = (
        select(func.count())
        .select_from(same_table)
        .where(
            same_table.c.workload_id == TuningRecordRow.workload_id,
            same_table.c.target_key == TuningRecordRow.target_key,
            or_(
                same_table.c.team_id == team.id,
                same_table.c.team_id.is_(None),
                same_table.c.shared.is_(True),
            ),
        )
        .scalar_subquery()
    )
    statement = (
        select(
            TuningRecordRow.id,
            TuningRecordRow.mean_run_sec,
            TuningRecordRow.verified,
            TuningRecordRow.shared,
            TuningRecordRow.team_id,
            TuningRecordRow.created_at,
            TargetRow.target_class,
            WorkloadSignatureRow.signature_json,
            TeamRow.name.label("team_name"),
            trials_of.label("trials"),
        )
        .join(WorkloadRow, WorkloadRow.id == TuningRecordRow.workload_id)
        .join(TargetRow, TargetRow.key == TuningRecordRow.target_key)
        .outerjoin(WorkloadSignatureRow, WorkloadSignatureRow.workload_id == WorkloadRow.id)
        .outerjoin(TeamRow, TeamRow.id == TuningRecordRow.team_id)
        .where(visible_to(team))
    )
    if operator:
        statement = statement.where(
            or_(
                WorkloadSignatureRow.kind == operator,
                WorkloadRow.mod_json.contains(operator, autoescape=True),
            )
        )
    if target_class:
        prefix = TargetRow.target_class.startswith(target_class, autoescape=True)
        statement = statement.where(prefix)
    if scope == "mine":
        statement = statement.where(TuningRecordRow.team_id == team.id)
    elif scope == "promoted":
        statement = statement.where(TuningRecordRow.shared.is_(True))
    elif scope == "organisation":
        statement = statement.where(TuningRecordRow.team_id.is_(None))
    statement = (
        statement.order_by(
            TuningRecordRow.mean_run_sec.is_(None),
            TuningRecordRow.mean_run_sec,
            TuningRecordRow.id,
        )
        .limit(limit)
        .offset(offset)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    return [_browsed(row, team) for row in rows]


def _browsed(row: Any, team: Team) -> BrowsedRecord:
    operator, shape = "?", []
    if row.signature_json:
        signature = json.loads(row.signature_json)
        operator = f"{signature.get('kind', '?')} {signature.get('anchor', '')}".strip()
        shape = [int(d) for d in signature.get("shape", [])]
    mine = row.team_id == team.id
    source = "organisation" if row.team_id is None else "yours" if mine else str(row.team_name)
    measured = row.verified and row.mean_run_sec is not None
    return BrowsedRecord(
        id=row.id,
        operator=operator,
        shape=shape,
        target_class=row.target_class,
        mean_run_us=round(row.mean_run_sec * 1e6, 3) if measured else None,
        trials=int(row.trials),
        source=source,
        verified=row.verified,
        shared=row.shared,
        mine=mine,
        created_at=row.created_at,
    )


def export(engine: Engine, team: Team, *, target: str | None) -> RecordsDocument:
    """The team's visible, verified records in MetaSchedule's JSON layout."""
    import tvm
    from tvm.s_tir.meta_schedule.database import Workload

    statement = (
        select(
            TuningRecordRow.workload_id,
            TuningRecordRow.trace_json,
            TuningRecordRow.run_secs_json,
            TuningRecordRow.args_info_json,
            TargetRow.target_json,
        )
        .join(TargetRow, TargetRow.key == TuningRecordRow.target_key)
        .where(
            visible_to(team),
            TuningRecordRow.verified.is_(True),
            TuningRecordRow.mean_run_sec.is_not(None),
        )
        .order_by(TuningRecordRow.id)
    )
    if target is not None:
        statement = statement.where(
            TuningRecordRow.target_key == fingerprint(parse_target(target)).key
        )
    with engine.connect() as connection:
        records = connection.execute(statement).all()
        workload_ids = sorted({row.workload_id for row in records})
        modules = dict(
            connection.execute(
                select(WorkloadRow.id, WorkloadRow.mod_json).where(WorkloadRow.id.in_(workload_ids))
            ).all()
        )
    index_of = {workload_id: index for index, workload_id in enumerate(workload_ids)}
    workloads = []
    for workload_id in workload_ids:
        shash, encoded = Workload(tvm.ir.load_json(modules[workload_id])).as_json()
        workloads.append((str(shash), str(encoded)))
    lines: list[RecordLine] = [
        (
            index_of[row.workload_id],
            (
                json.loads(row.trace_json),
                json.loads(row.run_secs_json),
                json.loads(row.target_json),
                json.loads(row.args_info_json) if row.args_info_json else None,
            ),
        )
        for row in records
    ]
    return RecordsDocument(workloads=workloads, records=lines)


def import_records(engine: Engine, team: Team, document: RecordsDocument) -> ImportResult:
    """File every record as the team's unverified claim; all or nothing.

    Everything is parsed before anything is written, so a bad line leaves the database as it
    was.
    """
    from tvm.s_tir.meta_schedule.database import TuningRecord, Workload
    from tvm.target import Target

    from tunefarm.tuning_db.sql_database import SqlDatabase

    workloads = []
    for number, line in enumerate(document.workloads):
        try:
            workloads.append(Workload.from_json(list(line)))
        except Exception as err:
            raise InvalidInput(
                f"workload {number} is not a MetaSchedule workload ({_first_line(err)})"
            ) from err
    parsed = []
    for number, (index, (trace, run_secs, target_json, args_info)) in enumerate(document.records):
        if not 0 <= index < len(workloads):
            raise InvalidInput(
                f"record {number} names workload {index}; there are {len(workloads)}"
            )
        kind = target_json.get("kind")
        if kind not in SUPPORTED_KINDS:
            raise InvalidInput(f"record {number}: unknown target kind {kind!r}")
        try:
            target = Target(target_json)
            record = TuningRecord.from_json(
                [trace, run_secs, target_json, args_info], workloads[index]
            )
        except Exception as err:
            raise InvalidInput(
                f"record {number} is not a MetaSchedule tuning record ({_first_line(err)})"
            ) from err
        parsed.append((target, record))
    databases: dict[str, SqlDatabase] = {}
    added = 0
    keys = set()
    for target, record in parsed:
        database = databases.get(str(target))
        if database is None:
            database = databases[str(target)] = SqlDatabase(engine, target=target)
        keys.add(database.workload_key(record.workload.mod))
        database.commit_workload(record.workload.mod)
        added += database.commit_claimed_record(record, team_id=team.id)
    return ImportResult(
        workloads=len(keys), records_added=added, records_already_known=len(parsed) - added
    )


def promote(engine: Engine, team: Team, record_ids: list[int]) -> int:
    """Share the team's records with every team; all must be the team's own."""
    wanted = set(record_ids)
    with engine.begin() as connection:
        own = set(
            connection.execute(
                select(TuningRecordRow.id).where(
                    TuningRecordRow.id.in_(wanted), TuningRecordRow.team_id == team.id
                )
            ).scalars()
        )
        missing = sorted(wanted - own)
        if missing:
            raise NotFound(f"no record {missing[0]} of your team")
        connection.execute(
            update(TuningRecordRow).where(TuningRecordRow.id.in_(own)).values(shared=True)
        )
    return len(own)


def _record_out(row: Any, team: Team) -> RecordOut:
    run_secs = json.loads(row.run_secs_json)
    measured = row.verified and row.mean_run_sec is not None
    return RecordOut(
        id=row.id,
        workload_key=row.workload_key,
        target_fingerprint=row.target_key,
        target=json.loads(row.target_json),
        run_secs=run_secs if measured else None,
        claimed_run_secs=None if row.verified else run_secs,
        mean_run_sec=row.mean_run_sec if measured else None,
        verified=row.verified,
        shared=row.shared,
        mine=row.team_id == team.id,
        created_at=row.created_at,
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(err).__name__
