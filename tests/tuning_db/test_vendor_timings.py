"""Vendor timings: stored once per key and read back, on SQLite and PostgreSQL."""

from __future__ import annotations

import tvm
from sqlalchemy import delete

from tunefarm.tuning_db import SqlDatabase
from tunefarm.tuning_db.schema import TargetRow
from tunefarm.tuning_db.vendor_timings import (
    VendorTimingKey,
    find_vendor_timing,
    store_vendor_timing,
)

SM90 = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
SM80 = tvm.target.Target({"kind": "cuda", "arch": "sm_80"})
CHAIN = '{"config": [1, 1, 0], "func": "tunefarm_cublaslt_matmul"}'


def test_a_timing_is_found_under_its_whole_key_only(db_url: str) -> None:
    database = SqlDatabase(db_url, target=SM90)
    other_target = database.register_target(SM80).key
    key = VendorTimingKey(database.target_fingerprint.key, CHAIN, "vendor", "shim-a")
    assert find_vendor_timing(database.engine, key) is None
    store_vendor_timing(database.engine, key, 4.5e-6, measured_on="gpu-box (NVIDIA H100)")
    assert find_vendor_timing(database.engine, key) == 4.5e-6
    for other in (
        VendorTimingKey(other_target, CHAIN, "vendor", "shim-a"),
        VendorTimingKey(key.target_key, CHAIN.replace("1, 1", "1, 0"), "vendor", "shim-a"),
        VendorTimingKey(key.target_key, CHAIN, "tuned", "shim-a"),
        VendorTimingKey(key.target_key, CHAIN, "vendor", "shim-b"),  # the shim changed
    ):
        assert find_vendor_timing(database.engine, other) is None, other


def test_the_first_timing_stored_is_kept(db_url: str) -> None:
    """Two builds that timed the same side at once: the second store neither fails nor wins."""
    database = SqlDatabase(db_url, target=SM90)
    key = VendorTimingKey(database.target_fingerprint.key, CHAIN, "tuned", "record-1")
    store_vendor_timing(database.engine, key, 7e-6, measured_on="a")
    store_vendor_timing(database.engine, key, 9e-6, measured_on="b")
    assert find_vendor_timing(database.engine, key) == 7e-6


def test_timings_go_with_their_target(db_url: str) -> None:
    database = SqlDatabase(db_url, target=SM90)
    key = VendorTimingKey(database.target_fingerprint.key, CHAIN, "vendor", "shim-a")
    store_vendor_timing(database.engine, key, 4.5e-6, measured_on="a")
    with database.engine.begin() as connection:
        connection.execute(delete(TargetRow).where(TargetRow.key == key.target_key))
    assert find_vendor_timing(database.engine, key) is None
