"""MetaSchedule's JSON database layout, both ways.

``database_workload.json`` holds one line per workload, ``[shash, base64 of the module's JSON]``;
``database_tuning_record.json`` holds one line per record, ``[workload_index, [trace, run_secs,
target, args_info]]``. Plain TVM users read and write these with ``ms.database.JSONDatabase``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm
from sqlalchemy import Connection, Engine, func, select
from tvm.s_tir.meta_schedule.database import Workload
from tvm.target import Target

from tunefarm.tuning_db.schema import Base, TargetRow, TuningRecordRow, WorkloadRow
from tunefarm.tuning_db.sql_database import file_target, file_workload, open_engine, record_values
from tunefarm.tuning_db.target_fingerprint import fingerprint
from tunefarm.tuning_db.upsert import insert_measured_records
from tunefarm.tuning_db.workload_key import workload_key

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"

_records = Base.metadata.tables[TuningRecordRow.__tablename__]


@dataclass(frozen=True)
class TransferCounts:
    workloads: int
    records: int
    new_workloads: int | None = None
    """On an import: how many of ``workloads`` the database did not have (None on export)."""
    new_records: int | None = None
    """On an import: how many of ``records`` were not there already, measured."""


def export_json_logs(url_or_engine: str | Engine, directory: Path) -> TransferCounts:
    """Write every workload and record of the database in MetaSchedule's JSON layout."""
    engine = open_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with engine.connect() as connection:
        workloads = connection.execute(
            select(WorkloadRow.id, WorkloadRow.mod_json).order_by(WorkloadRow.id)
        ).all()
        records = connection.execute(
            select(
                TuningRecordRow.workload_id,
                TuningRecordRow.trace_json,
                TuningRecordRow.run_secs_json,
                TuningRecordRow.args_info_json,
                TargetRow.target_json,
            )
            .join(TargetRow, TargetRow.key == TuningRecordRow.target_key)
            .order_by(TuningRecordRow.id)
        ).all()
    index_of: dict[int, int] = {}
    with (directory / WORKLOAD_FILE).open("w") as out:
        for index, (workload_id, mod_json) in enumerate(workloads):
            index_of[workload_id] = index
            workload = Workload(tvm.ir.load_json(mod_json))
            out.write(json.dumps(workload.as_json()) + "\n")
    with (directory / RECORD_FILE).open("w") as out:
        for row in records:
            record = [
                json.loads(row.trace_json),
                json.loads(row.run_secs_json),
                json.loads(row.target_json),
                json.loads(row.args_info_json) if row.args_info_json else None,
            ]
            out.write(json.dumps([index_of[row.workload_id], record]) + "\n")
    return TransferCounts(workloads=len(workloads), records=len(records))


def import_json_logs(url_or_engine: str | Engine, directory: Path) -> TransferCounts:
    """Read MetaSchedule's JSON files; records already in the database are skipped.

    The records are filed as the files hold them, all in one transaction. Their traces are not
    replayed (MetaSchedule's ``JSONDatabase`` replays each one on its workload): replaying a
    tensor-core trace needs TVM's tensor intrinsics, an import of 10 s to minutes, and a
    replayed trace serializes to the same JSON as the file's. A record the files do not hold
    in MetaSchedule's layout is refused with its line, before anything is written.
    """
    directory = Path(directory)
    for name in (WORKLOAD_FILE, RECORD_FILE):
        if not (directory / name).is_file():
            raise ValueError(f"{directory} has no {name}; is it a MetaSchedule work_dir?")
    workload_lines = _json_lines(directory / WORKLOAD_FILE)
    records = [
        _checked_record(line, number, len(workload_lines))
        for number, line in enumerate(_json_lines(directory / RECORD_FILE), start=1)
    ]
    modules = {
        index: Workload.from_json(workload_lines[index]).mod
        for index in sorted({index for index, _ in records})
    }
    # A key costs a print of the module: once per workload, not per record.
    keys = {index: workload_key(mod) for index, mod in modules.items()}
    engine = open_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    with engine.begin() as connection:
        before = _verified_counts(connection)
        workload_ids = {
            index: file_workload(connection, mod, key=keys[index]) for index, mod in modules.items()
        }
        target_keys = _file_targets(connection, [record[2] for _, record in records])
        rows = [
            record_values(workload_ids[index], target_keys[_target_text(record[2])], record)
            for index, record in records
        ]
        insert_measured_records(connection, _records, rows)
        after = _verified_counts(connection)
    return TransferCounts(
        workloads=len(set(keys.values())),
        records=len(records),
        new_workloads=after[0] - before[0],
        new_records=after[1] - before[1],
    )


def _verified_counts(connection: Connection) -> tuple[int, int]:
    """Workloads, and measured records, in the database."""
    workloads = connection.execute(select(func.count()).select_from(WorkloadRow)).scalar_one()
    records = connection.execute(
        select(func.count()).select_from(_records).where(_records.c.verified.is_(True))
    ).scalar_one()
    return int(workloads), int(records)


def _json_lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _checked_record(line: Any, number: int, workloads: int) -> tuple[int, list[Any]]:
    """``(workload index, [trace, run_secs, target, args_info])`` of a record line."""
    valid = (
        isinstance(line, list)
        and len(line) == 2
        and isinstance(line[0], int)
        and 0 <= line[0] < workloads
        and isinstance(line[1], list)
        and len(line[1]) == 4
        and isinstance(line[1][0], list)
        and (line[1][1] is None or isinstance(line[1][1], list))
        and (line[1][2] is None or isinstance(line[1][2], dict))
    )
    if not valid:
        raise ValueError(f"line {number} of {RECORD_FILE} is not a MetaSchedule tuning record")
    return line[0], line[1]


def _target_text(target_json: dict[str, Any] | None) -> str:
    return json.dumps(target_json, sort_keys=True)


def _file_targets(
    connection: Connection, targets_json: list[dict[str, Any] | None]
) -> dict[str, str]:
    """Target JSON text → fingerprint key, each target filed; a record without a target is
    an ``llvm`` one, as MetaSchedule reads it."""
    keys = {}
    for target_json in targets_json:
        text = _target_text(target_json)
        if text not in keys:
            fp = fingerprint(Target(target_json if target_json is not None else "llvm"))
            file_target(connection, fp)
            keys[text] = fp.key
    return keys
