"""MetaSchedule's JSON database layout, both ways.

``database_workload.json`` holds one line per workload, ``[shash, base64 of the module's JSON]``;
``database_tuning_record.json`` holds one line per record, ``[workload_index, [trace, run_secs,
target, args_info]]``. Plain TVM users read and write these with ``ms.database.JSONDatabase``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tvm
from sqlalchemy import Engine, select
from tvm.s_tir.meta_schedule.database import JSONDatabase, Workload
from tvm.target import Target

from tuning_db.record_json import register_intrinsics_for
from tuning_db.schema import TargetRow, TuningRecordRow, WorkloadRow
from tuning_db.sql_database import SqlDatabase, open_engine

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"


@dataclass(frozen=True)
class TransferCounts:
    workloads: int
    records: int


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
    """Read MetaSchedule's JSON files; records already in the database are skipped."""
    directory = Path(directory)
    for name in (WORKLOAD_FILE, RECORD_FILE):
        if not (directory / name).is_file():
            raise ValueError(f"{directory} has no {name}; is it a MetaSchedule work_dir?")
    engine = open_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    register_intrinsics_for((directory / RECORD_FILE).read_text())
    source = JSONDatabase(
        path_workload=str(directory / WORKLOAD_FILE),
        path_tuning_record=str(directory / RECORD_FILE),
        allow_missing=False,
    )
    databases: dict[str, SqlDatabase] = {}
    workloads_seen: set[str] = set()
    count = 0
    for record in source.get_all_tuning_records():
        target = record.target if record.target is not None else Target("llvm")
        database = databases.get(str(target))
        if database is None:
            database = databases[str(target)] = SqlDatabase(engine, target=target)
        workloads_seen.add(database.workload_key(record.workload.mod))
        database.commit_workload(record.workload.mod)
        database.commit_tuning_record(record)
        count += 1
    return TransferCounts(workloads=len(workloads_seen), records=count)
