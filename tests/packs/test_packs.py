"""The committed pre-tuned packs load with `tunefarm records import` and stay small."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from tunefarm.tuning_db.json_logs import WORKLOAD_FILE, import_json_logs
from tunefarm.tuning_db.schema import TuningRecordRow
from tunefarm.tuning_db.sql_database import open_engine

PACKS = sorted((Path(__file__).resolve().parents[2] / "packs").iterdir())


@pytest.mark.parametrize("pack", PACKS, ids=[pack.name for pack in PACKS])
def test_a_pack_imports_one_valid_record_per_workload(pack: Path, tmp_path: Path) -> None:
    size = sum(path.stat().st_size for path in pack.iterdir())
    assert size < 5 * 1024**2, f"{pack.name} is {size} bytes; packs must stay a few MB"
    workloads = len(pack.joinpath(WORKLOAD_FILE).read_text().splitlines())
    engine = open_engine(f"sqlite:///{tmp_path / 'tuning.db'}")
    counts = import_json_logs(engine, pack)
    assert counts.workloads == workloads
    assert counts.records == workloads
    # The operator's own import is trusted: these records count as coverage for a build.
    with engine.connect() as connection:
        verified = connection.execute(
            select(func.count()).where(TuningRecordRow.verified.is_(True))
        ).scalar_one()
    assert verified == workloads
