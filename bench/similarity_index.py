"""The similarity index at a million workloads: lookup latency on SQLite and PostgreSQL.

Fills a fresh SQLite file and a fresh PostgreSQL database (migrated as tunefarm does) with
``--rows`` synthetic workloads and their signature rows, bulk-loaded, then times lookups through
``SqlDatabase`` on real conv2d modules and writes
``bench/results/similarity_index-<hostname>-<UTC time>.json``.

The data is synthetic and says so in the JSON:

- ``workloads``: a key and a placeholder module per row, except the ``--measured-share`` of rows
  that have records, which carry a real conv2d module (records must deserialise).
- ``workload_signatures``: one "hot" family, the family of the query modules (an NCHW conv2d as
  TOPI writes it, fp32), holds ``--hot-share`` of the rows with random shapes; the others are
  spread over 99 other families.
- ``tuning_records``: 3 records per measured workload, on this target, on another of its class,
  and on another architecture.

Timed (after a warm-up, signatures of the query modules already computed):

- ``nearest_workloads(mod, limit=3)``: the index lookup, its widening and the best time query;
- ``similar_records(mod, workloads=4, per_workload=8)``: the same plus the records' rows and
  their TVM deserialisation (4 workload modules, up to 32 records).

Run: ``.venv/bin/python bench/similarity_index.py`` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa
import tvm
from sqlalchemy.engine import make_url
from tvm import te, topi
from tvm.ir import IRModule
from tvm.s_tir import Schedule
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.database import TuningRecord, Workload
from tvm.target import Target

from tunefarm.tuning_db import similarity_index
from tunefarm.tuning_db.operator_signature import OperatorSignature, operator_signature
from tunefarm.tuning_db.record_json import record_as_json
from tunefarm.tuning_db.similarity_index import window_statement
from tunefarm.tuning_db.sql_database import (
    SqlDatabase,
    has_valid_records,
    open_engine,
    trace_hash,
)
from tunefarm.tuning_db.target_fingerprint import fingerprint

POSTGRES_ADMIN_URL = os.environ.get(
    "TUNEFARM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TARGET = Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 2})
CLASS_TARGET = Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 16})
OTHER_TARGET = Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
OTHER_FAMILIES = 99
CREATED_AT = "2026-11-25 00:00:00+00:00"


def machine() -> dict[str, Any]:
    cpu_model = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def conv2d(channels: int, size: int, filters: int, kernel: int, batch: int) -> IRModule:
    data = te.placeholder((batch, channels, size, size), name="data")
    weight = te.placeholder((filters, channels, kernel, kernel), name="weight")
    out = topi.nn.conv2d_nchw(data, weight, 1, kernel // 2, 1)
    func = te.create_prim_func([data, weight, out]).with_attr("global_symbol", "main")
    return IRModule({"main": func})


def random_conv_shape(rng: random.Random) -> tuple[int, int, int, int, int]:
    """channels, size, filters, kernel, batch: ResNet-like, spread over 2 decades each."""
    return (
        rng.choice([3, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024]),
        rng.choice([7, 14, 16, 28, 32, 56, 64, 112, 224]),
        rng.choice([8, 16, 32, 48, 64, 96, 128, 256, 512, 1024, 2048]),
        rng.choice([1, 3, 5, 7]),
        rng.choice([1, 2, 4, 8, 16]),
    )


def synthetic_signature(base: OperatorSignature, shape: tuple[int, ...]) -> OperatorSignature:
    return OperatorSignature(
        kind=base.kind,
        anchor=base.anchor,
        dtypes=base.dtypes,
        layout=base.layout,
        roles=base.roles,
        shape=shape,
        strides=base.strides,
        blocks=base.blocks,
    )


def conv_anchor_shape(shape: tuple[int, int, int, int, int]) -> tuple[int, ...]:
    channels, size, filters, kernel, batch = shape
    return (batch, filters, size, size, channels, kernel, kernel)


def signature_rows(
    rows: int, hot_share: float, base: OperatorSignature, seed: int
) -> Iterator[tuple[int, str, str, float, str, int]]:
    """(workload_id, family_key, kind, size_log2, signature_json, version) for ids 1..rows."""
    rng = random.Random(seed)
    hot_family = base.family_key
    other_families = [
        hashlib.sha256(f"synthetic-family-{i}".encode()).hexdigest() for i in range(OTHER_FAMILIES)
    ]
    for workload_id in range(1, rows + 1):
        signature = synthetic_signature(base, conv_anchor_shape(random_conv_shape(rng)))
        if rng.random() < hot_share:
            family = hot_family
        else:
            family = rng.choice(other_families)
        yield (
            workload_id,
            family,
            signature.kind,
            signature.size_log2,
            signature.as_json(),
            signature.version,
        )


def first_loop_split(mod: IRModule, factor: int) -> Any:
    sch = Schedule(mod)
    block = sch.get_child_blocks(sch.get_sblock("root"))[0]
    sch.split(sch.get_loops(block)[0], [None, factor])
    return sch.trace


def record_payload(mod: IRModule, target: Target) -> dict[str, str]:
    record = TuningRecord(
        first_loop_split(mod, 4), Workload(mod), [1e-3], target, ArgInfo.from_prim_func(mod["main"])
    )
    trace_json, _run_secs, _target, args_info = record_as_json(record)
    trace_text = json.dumps(trace_json, separators=(",", ":"))
    return {
        "trace_hash": trace_hash(trace_text),
        "trace_json": trace_text,
        "args_info_json": json.dumps(args_info),
    }


def fill(
    url: str,
    *,
    rows: int,
    hot_share: float,
    measured_share: float,
    base: OperatorSignature,
    real_mod: IRModule,
    seed: int,
) -> dict[str, float]:
    """Bulk-load the synthetic rows; seconds per phase."""
    engine = open_engine(url)
    target_keys = [
        SqlDatabase(engine, target=target).target_fingerprint.key
        for target in (TARGET, CLASS_TARGET, OTHER_TARGET)
    ]
    # Compact JSON (load_json reads it): a third of the indented size.
    real_json = json.dumps(json.loads(tvm.ir.save_json(real_mod)), separators=(",", ":"))
    payload = record_payload(real_mod, TARGET)
    rng = random.Random(seed + 1)
    measured = {i for i in range(1, rows + 1) if rng.random() < measured_share}
    timings: dict[str, float] = {}

    def workload_rows() -> Iterator[tuple[int, str, str, str]]:
        for i in range(1, rows + 1):
            key = hashlib.sha256(f"synthetic-workload-{i}".encode()).hexdigest()
            yield i, key, real_json if i in measured else "synthetic", CREATED_AT

    def record_rows() -> Iterator[tuple[Any, ...]]:
        record_id = 0
        for i in sorted(measured):
            for rank, target_key in enumerate(target_keys):
                record_id += 1
                sec = 1e-3 * (1 + rng.random()) * (1 + rank)
                yield (
                    record_id,
                    i,
                    target_key,
                    payload["trace_hash"],
                    payload["trace_json"],
                    json.dumps([sec]),
                    sec,
                    payload["args_info_json"],
                    CREATED_AT,
                    True,
                    False,
                )

    record_columns = (
        "id, workload_id, target_key, trace_hash, trace_json, run_secs_json, mean_run_sec, "
        "args_info_json, created_at, verified, shared"
    )
    tables = [
        ("workloads", "id, key, mod_json, created_at", workload_rows),
        (
            "workload_signatures",
            "workload_id, family_key, kind, size_log2, signature_json, version",
            lambda: signature_rows(rows, hot_share, base, seed),
        ),
        ("tuning_records", record_columns, record_rows),
    ]
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for table, columns, produce in tables:
            start = time.perf_counter()
            if engine.dialect.name == "postgresql":
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                    for row in produce():
                        copy.write_row(row)
            else:
                marks = ", ".join("?" for _ in columns.split(","))
                cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", produce())
            raw.commit()
            timings[f"load_{table}_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        if engine.dialect.name == "postgresql":
            for table in ("workloads", "tuning_records"):
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            raw.commit()
            raw.driver_connection.autocommit = True  # type: ignore[union-attr]
            raw.driver_connection.execute("VACUUM ANALYZE")  # type: ignore[union-attr]
        else:
            cursor.execute("ANALYZE")
            raw.commit()
        timings["analyze_s"] = round(time.perf_counter() - start, 2)
    finally:
        raw.close()
    engine.dispose()
    return timings


def explain(engine: sa.Engine, statement: Any) -> list[str]:
    compiled = str(statement.compile(engine, compile_kwargs={"literal_binds": True}))
    prefix = (
        "EXPLAIN QUERY PLAN" if engine.dialect.name == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS)"
    )
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(f"{prefix} {compiled}").all()
    return [" | ".join(str(value) for value in row) for row in rows]


def window_statement_id_column() -> Any:
    from tunefarm.tuning_db.schema import WorkloadSignatureRow

    return WorkloadSignatureRow.__table__.c.workload_id


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1e3, 3),
        "p90_ms": round(at(0.90) * 1e3, 3),
        "p99_ms": round(at(0.99) * 1e3, 3),
        "max_ms": round(ordered[-1] * 1e3, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1e3, 3),
    }


def time_lookups(
    url: str, queries: list[IRModule], similar_queries: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    engine = open_engine(url)
    database = SqlDatabase(engine, target=TARGET)
    for mod in queries:  # warm-up: workload keys, signatures, the connection pool, the caches
        database.signature(mod)
    for mod in queries[:10]:
        database.similar_records(mod)
    nearest_times, similar_times = [], []
    neighbours_found, records_found, distances = [], [], []
    for mod in queries:
        start = time.perf_counter()
        nearest = database.nearest_workloads(mod, limit=3)
        nearest_times.append(time.perf_counter() - start)
        neighbours_found.append(len(nearest))
        distances += [n.distance for n in nearest]
    for mod in queries[:similar_queries]:
        start = time.perf_counter()
        similar = database.similar_records(mod, workloads=4, per_workload=8)
        similar_times.append(time.perf_counter() - start)
        records_found.append(len(similar))

    signature = database.signature(queries[0])
    target_keys = [fingerprint(t).key for t in (TARGET, CLASS_TARGET, OTHER_TARGET)]
    window = (signature.family_key, signature.size_log2, 32)
    plans = {
        "family_size_range": explain(engine, window_statement(*window, above=True)),
        "family_size_range_with_records": explain(
            engine,
            window_statement(
                *window,
                above=False,
                qualify=has_valid_records(window_statement_id_column(), target_keys),
            ),
        ),
    }
    engine.dispose()
    timings = {
        "nearest_workloads": {
            **percentiles(nearest_times),
            "neighbours_mean": round(statistics.fmean(neighbours_found), 2),
            "distance_median": round(statistics.median(distances), 3) if distances else None,
        },
        "similar_records": {
            **percentiles(similar_times),
            "records_mean": round(statistics.fmean(records_found), 2),
        },
    }
    return timings, plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--hot-share", type=float, default=0.3)
    parser.add_argument("--measured-share", type=float, default=0.01)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--similar-queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    rng = random.Random(args.seed + 2)
    base_mod = conv2d(16, 32, 32, 3, 1)
    base = operator_signature(base_mod)
    queries = [conv2d(*random_conv_shape(rng)) for _ in range(args.queries)]
    print(f"{len(queries)} query modules built", flush=True)

    report: dict[str, Any] = {
        "benchmark": "similarity_index",
        "machine": machine(),
        "tvm": tvm.__version__,
        "settings": vars(args)
        | {
            "out": str(args.out),
            "first_window": similarity_index.FIRST_WINDOW,
            "max_window": similarity_index.MAX_WINDOW,
        },
        "data": (
            f"synthetic: {args.rows} workloads and signature rows, bulk-loaded (COPY on "
            f"PostgreSQL, executemany on SQLite); {args.hot_share:.0%} of the signatures in the "
            "family of the query modules (NCHW conv2d fp32, random ResNet-like shapes), the rest "
            f"in {OTHER_FAMILIES} other families; {args.measured_share:.0%} of the workloads "
            "carry a real module and 3 records (this target, one of its class, another CPU)."
        ),
        "databases": {},
    }
    urls: dict[str, str] = {}
    admin = None
    with tempfile.TemporaryDirectory(prefix="similarity-bench-") as scratch:
        urls["sqlite"] = f"sqlite:///{Path(scratch) / 'tuning.db'}"
        if not args.skip_postgres:
            admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
            name = f"tunefarm_bench_{uuid.uuid4().hex[:12]}"
            with admin.connect() as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
            urls["postgresql"] = (
                make_url(POSTGRES_ADMIN_URL)
                .set(database=name)
                .render_as_string(hide_password=False)
            )
        try:
            for dialect, url in urls.items():
                print(f"{dialect}: loading {args.rows} rows ...", flush=True)
                loads = fill(
                    url,
                    rows=args.rows,
                    hot_share=args.hot_share,
                    measured_share=args.measured_share,
                    base=base,
                    real_mod=base_mod,
                    seed=args.seed,
                )
                print(f"{dialect}: {loads}", flush=True)
                timings, plans = time_lookups(url, queries, args.similar_queries)
                report["databases"][dialect] = {"load": loads, "lookups": timings, "plans": plans}
                print(f"{dialect}: {json.dumps(timings)}", flush=True)
                for plan, lines in plans.items():
                    print(f"  {plan}: " + "\n    ".join(lines), flush=True)
        finally:
            if admin is not None:
                with admin.connect() as connection:
                    database = make_url(urls["postgresql"]).database
                    connection.execute(
                        sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                    )
                admin.dispose()

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"similarity_index-{socket.gethostname()}-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
