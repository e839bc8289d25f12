"""The similarity index and target classes of SqlDatabase, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tvm
from sqlalchemy import insert, select
from tvm.ir import IRModule
from tvm.target import Target

import tunefarm.tuning_db.similarity_index
from tests.tuning_db.workloads import any_record, conv2d, dense
from tunefarm.tuning_db import SqlDatabase, target_fingerprint
from tunefarm.tuning_db.schema import TeamRow, WorkloadSignatureRow
from tunefarm.tuning_db.sql_database import best_verified_times

LLVM = Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 2})
LLVM_16_CORES = Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 16})
OTHER_CPU = Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
H100 = Target("nvidia/nvidia-h100")
# TVM 0.27 has no H200 tag: a hand-written target of the same arch (sm_90a) without the L2 size.
H200 = Target(
    {
        k: v
        for k, v in target_fingerprint.fingerprint(H100).details["target"].items()
        if k != "l2_cache_size_bytes"
    }
)
A100 = Target("nvidia/nvidia-a100")

QUERY = conv2d(channels=16, size=32, filters=32)
NEAR = conv2d(channels=16, size=32, filters=64)  # distance 1
FAR = conv2d(channels=32, size=64, filters=64)  # distance 2
FARTHEST = conv2d(channels=64, size=8, filters=8)  # distance sqrt(4 + 4 + 4 + 4) = 4


def _commit(
    database: SqlDatabase,
    mod: IRModule,
    target: Target,
    runs: dict[int, float | None],
) -> None:
    """One record per split factor; None is a failed measurement."""
    workload = database.commit_workload(mod)
    for factor, sec in runs.items():
        database.commit_tuning_record(
            any_record(mod, workload, target, factor=factor, run_secs=[sec if sec else 1e10])
        )


def _fill_cpu_neighbours(database: SqlDatabase) -> None:
    _commit(database, NEAR, LLVM, {2: 2e-3, 4: 1e-3, 8: 3e-3, 16: None})
    _commit(database, FAR, LLVM_16_CORES, {2: 5e-3})
    _commit(database, FARTHEST, OTHER_CPU, {2: 4e-3})
    _commit(database, dense(), LLVM, {2: 1e-4})  # another family
    _commit(database, conv2d(relu=True), LLVM, {2: 1e-4})  # another family: a relu block


def _summary(similar: list[Any]) -> list[tuple[str, float, str, float]]:
    return [
        (s.workload_key[:12], round(s.distance, 6), s.target_relation, s.mean_run_sec)
        for s in similar
    ]


def test_similar_records_are_the_nearest_workloads_of_the_family_in_order(db_url: str) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    _fill_cpu_neighbours(database)
    near, far, farthest = (database.workload_key(mod) for mod in (NEAR, FAR, FARTHEST))

    similar = database.similar_records(QUERY, workloads=4, per_workload=2)
    assert [(s.workload_key, s.distance, s.mean_run_sec) for s in similar] == [
        (near, pytest.approx(1.0), 1e-3),  # the best two of NEAR, the failed run left out
        (near, pytest.approx(1.0), 2e-3),
        (far, pytest.approx(2.0), 5e-3),
        (farthest, pytest.approx(4.0), 4e-3),
    ]
    assert [s.target_relation for s in similar] == ["same", "same", "class", "other"]
    assert all(s.verified and s.team_id is None for s in similar)
    first = similar[0]
    assert database.workload_key(first.record.workload.mod) == near  # on its own workload
    assert first.target_class == target_fingerprint.target_class(LLVM)

    assert [s.workload_key for s in database.similar_records(QUERY, workloads=1)] == [near] * 3
    assert database.similar_records(QUERY, workloads=0) == []
    # A fused conv2d + relu finds only its own family.
    fused = database.similar_records(conv2d(relu=True, size=16))
    assert {s.workload_key for s in fused} == {database.workload_key(conv2d(relu=True))}


def test_similar_records_leave_out_exact_hits_and_flag_claims_and_other_teams(
    db_url: str,
) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    _commit(database, QUERY, LLVM, {2: 1e-3})  # an exact hit: the search has it already
    _commit(database, QUERY, OTHER_CPU, {4: 2e-3})  # the same workload on another CPU
    with database.engine.begin() as connection:
        team_id = connection.execute(
            insert(TeamRow).values(name="acme").returning(TeamRow.id)
        ).scalar_one()
    workload = database.commit_workload(NEAR)
    claim = any_record(NEAR, workload, LLVM, factor=8, run_secs=[1e-9])
    assert database.commit_claimed_record(claim, team_id=team_id)
    own_claim = any_record(QUERY, database.commit_workload(QUERY), LLVM, factor=16, run_secs=[1e-9])
    assert database.commit_claimed_record(own_claim, team_id=team_id)

    similar = database.similar_records(QUERY)
    assert [(s.distance, s.target_relation, s.verified, s.team_id) for s in similar] == [
        (0.0, "same", False, team_id),  # our own workload, only claimed: a seed to measure
        (0.0, "other", True, None),
        (pytest.approx(1.0), "same", False, team_id),
    ]
    # The claims never become exact hits.
    assert database.best_run_sec(QUERY) == pytest.approx(1e-3)
    assert database.best_run_sec(NEAR) is None


def test_nearest_workloads_for_a_coverage_report(db_url: str) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    _fill_cpu_neighbours(database)
    nearest = database.nearest_workloads(QUERY, limit=3)
    assert [(n.workload_key, round(n.distance, 6), n.best_run_sec) for n in nearest] == [
        (database.workload_key(NEAR), 1.0, 1e-3),
        (database.workload_key(FAR), 2.0, 5e-3),  # a class record: built as is on this target
        (database.workload_key(FARTHEST), 4.0, None),  # another CPU: a seed only
    ]
    assert [n.workload_key for n in database.nearest_workloads(QUERY, limit=1)] == [
        database.workload_key(NEAR)
    ]
    # A workload measured only on another CPU is its own nearest workload, at distance 0.
    _commit(database, QUERY, OTHER_CPU, {2: 1e-3})
    own = database.nearest_workloads(QUERY, limit=2)
    assert [(n.workload_key, n.distance, n.best_run_sec) for n in own] == [
        (database.workload_key(QUERY), 0.0, None),
        (database.workload_key(NEAR), pytest.approx(1.0), 1e-3),
    ]


def _seeds_of(similar: list[Any]) -> dict[str, float]:
    return {s.workload_key: s.distance for s in similar}


def test_seed_workloads_are_the_workloads_similar_records_offer(db_url: str) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    assert database.seed_workloads(QUERY) == {}
    _fill_cpu_neighbours(database)
    for workloads in (0, 1, 2, 4):
        similar = database.similar_records(QUERY, workloads=workloads, per_workload=1)
        assert database.seed_workloads(QUERY, workloads=workloads) == _seeds_of(similar)
    # The workload's own exact hit is no seed; its record on another CPU is, at distance 0.
    _commit(database, QUERY, LLVM, {2: 1e-3})
    assert database.workload_key(QUERY) not in database.seed_workloads(QUERY)
    _commit(database, QUERY, OTHER_CPU, {4: 2e-3})
    seeds = database.seed_workloads(QUERY, workloads=4)
    assert seeds[database.workload_key(QUERY)] == 0.0
    assert seeds == _seeds_of(database.similar_records(QUERY, workloads=4, per_workload=1))


def test_the_lookup_widens_its_window_until_no_unread_row_can_be_nearer(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tunefarm.tuning_db.similarity_index, "FIRST_WINDOW", 1)
    database = SqlDatabase(db_url, target=LLVM)
    # Rows between the query and its nearest measured neighbour, in size order, unmeasured.
    for filters in (33, 34, 35, 36, 30, 29, 28):
        database.commit_workload(conv2d(filters=filters))
    _commit(database, conv2d(filters=8), LLVM, {2: 1e-3})  # distance 2, smaller
    _commit(database, conv2d(filters=96), LLVM, {2: 1e-3})  # distance log2(3), larger
    nearest = database.nearest_workloads(QUERY, limit=1)
    assert [n.workload_key for n in nearest] == [database.workload_key(conv2d(filters=96))]


def test_every_committed_workload_gets_a_signature(db_url: str) -> None:
    database = SqlDatabase(db_url, target=LLVM)
    database.commit_workload(QUERY)
    database.commit_workload(conv2d(filters=64))
    database.commit_workload(QUERY)
    with database.engine.connect() as connection:
        rows = connection.execute(select(WorkloadSignatureRow)).all()
    assert len(rows) == 2
    assert {row.kind for row in rows} == {"conv"}
    assert len({row.family_key for row in rows}) == 1


def _lookups(url: str) -> list[tuple[str, float, str, float]]:
    database = SqlDatabase(url, target=LLVM)
    _fill_cpu_neighbours(database)
    _commit(database, QUERY, OTHER_CPU, {2: 7e-3})
    summary = _summary(database.similar_records(QUERY, workloads=3, per_workload=3))
    database.engine.dispose()
    return summary


def test_sqlite_and_postgresql_return_the_same_neighbours(
    tmp_path: Path, postgres_url: str
) -> None:
    from tests.conftest import _reset_postgres

    _reset_postgres(postgres_url)
    on_sqlite = _lookups(f"sqlite:///{tmp_path / 'tuning.db'}")
    on_postgres = _lookups(postgres_url)
    assert len(on_sqlite) == 6
    assert on_sqlite == on_postgres


# -- target classes ----------------------------------------------------------------------------


def test_an_h100_record_serves_an_h200_and_is_marked_as_such(db_url: str) -> None:
    h100 = SqlDatabase(db_url, target=H100)
    _commit(h100, QUERY, H100, {2: 2e-3, 4: 1e-3})

    h200 = SqlDatabase(db_url, target=H200)
    record = h200.query_tuning_record(QUERY, H200, "main")
    assert record is not None
    assert [float(sec) for sec in record.run_secs] == [1e-3]
    assert len(h200.get_top_k(h200.commit_workload(QUERY), 5)) == 2
    assert h200.best_run_sec(QUERY) == pytest.approx(1e-3)
    origin = h200.best_record_origin(QUERY)
    assert origin is not None
    assert origin.relation == "class" and origin.target_class == "cuda/sm_90a"
    assert origin.target_key == target_fingerprint.fingerprint(H100).key
    assert h200.best_record_relation(QUERY) == "class"
    assert h100.best_record_relation(QUERY) == "same"
    # The API's coverage counts it too; the H200's own records are not in len() though.
    key = h200.workload_key(QUERY)
    h200_key = h200.target_fingerprint.key
    assert best_verified_times(h200.engine, [key], h200_key) == {key: pytest.approx(1e-3)}
    assert len(h200) == 0
    # An exact hit is no seed.
    assert h200.similar_records(QUERY) == []


def test_the_own_fingerprint_comes_before_its_class(db_url: str) -> None:
    h100 = SqlDatabase(db_url, target=H100)
    _commit(h100, QUERY, H100, {2: 1e-3})
    h200 = SqlDatabase(db_url, target=H200)
    _commit(h200, QUERY, H200, {4: 5e-3})  # slower, but measured on this very target
    assert h200.best_run_sec(QUERY) == pytest.approx(5e-3)
    origin = h200.best_record_origin(QUERY)
    assert origin is not None and origin.relation == "same"
    assert [float(r.run_secs[0]) for r in h200.get_top_k(h200.commit_workload(QUERY), 5)] == [5e-3]
    key = h200.workload_key(QUERY)
    assert best_verified_times(h200.engine, [key], h200.target_fingerprint.key) == {
        key: pytest.approx(5e-3)
    }


def _commit_with_older_tvm(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An H100 record filed by a process of another TVM release; its target key."""
    with monkeypatch.context() as patch:
        patch.setattr(tvm, "__version__", "0.26.0")
        patch.setattr(target_fingerprint, "_CACHE", {})
        older = SqlDatabase(db_url, target=H100)
        assert older.target_fingerprint.tvm_version == "0.26.0"
        _commit(older, QUERY, H100, {8: 1e-4})
        return older.target_fingerprint.key


def test_another_architecture_or_tvm_version_is_never_an_exact_hit_but_seeds(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a100 = SqlDatabase(db_url, target=A100)
    _commit(a100, QUERY, A100, {2: 2e-3})
    older_key = _commit_with_older_tvm(db_url, monkeypatch)

    h200 = SqlDatabase(db_url, target=H200)
    assert h200.query_tuning_record(QUERY, H200, "main") is None
    assert h200.get_top_k(h200.commit_workload(QUERY), 5) == []
    assert h200.best_record_origin(QUERY) is None
    assert best_verified_times(h200.engine, [h200.workload_key(QUERY)], older_key) != {}
    assert (
        best_verified_times(h200.engine, [h200.workload_key(QUERY)], h200.target_fingerprint.key)
        == {}
    )

    similar = h200.similar_records(QUERY)
    assert [(s.distance, s.target_relation, s.mean_run_sec, s.target_class) for s in similar] == [
        (0.0, "other", 1e-4, "cuda/sm_90a"),  # the same class, an older TVM
        (0.0, "other", 2e-3, "cuda/sm_80"),
    ]
    assert [n.best_run_sec for n in h200.nearest_workloads(QUERY)] == [None]
    # CPU records are never offered to a GPU target, nor GPU records to a CPU one.
    cpu = SqlDatabase(db_url, target=LLVM)
    _commit(cpu, NEAR, LLVM, {2: 1e-3})
    assert {s.target_class.split("/")[0] for s in h200.similar_records(QUERY)} == {"cuda"}
    assert [s.workload_key for s in cpu.similar_records(QUERY)] == [cpu.workload_key(NEAR)]
