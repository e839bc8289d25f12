"""Job rows: the lease fences writes, abandoned jobs are found once, unclaimed ones can fail."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone

from sqlalchemy import Engine

from tunefarm.tuning_db import job_store
from tunefarm.tuning_db.sql_database import open_engine


def _job(url: str) -> tuple[Engine, str]:
    engine = open_engine(url)
    sha256 = hashlib.sha256(b"onnx").hexdigest()
    job_store.store_model_blob(engine, sha256, lambda: b"onnx")
    job_id = job_store.create_job(
        engine, model_name="m.onnx", model_sha256=sha256, options={"target": "llvm", "trials": 4}
    ).id
    return engine, job_id


def test_the_lease_fences_a_second_coordinator(db_url: str) -> None:
    engine, job_id = _job(db_url)
    assert job_store.claim(engine, job_id, "first", lease_sec=30)
    assert not job_store.claim(engine, job_id, "second", lease_sec=30)
    assert not job_store.update_job(engine, job_id, "second", state="tuning")
    assert job_store.update_job(engine, job_id, "first", state="tuning")
    assert job_store.renew(engine, job_id, "second", lease_sec=30) is None
    assert job_store.renew(engine, job_id, "first", lease_sec=30) is False


def test_an_abandoned_job_is_requeued_once_and_claimed_again(db_url: str) -> None:
    engine, job_id = _job(db_url)
    assert job_store.claim(engine, job_id, "dead", lease_sec=0.2)
    time.sleep(0.4)
    assert job_store.abandoned_jobs(engine) == [job_id]
    assert job_store.mark_requeued(engine, job_id, hold_sec=30)
    assert not job_store.mark_requeued(engine, job_id, hold_sec=30)
    assert job_store.abandoned_jobs(engine) == []
    assert job_store.claim(engine, job_id, "next", lease_sec=30)
    job = job_store.get_job(engine, job_id)
    assert job is not None and job.attempts == 2 and job.lease_owner == "next"


def test_a_job_that_cannot_start_is_failed_not_left_queued(db_url: str) -> None:
    engine, job_id = _job(db_url)
    assert job_store.fail_unclaimed(engine, job_id, error="database away")
    job = job_store.get_job(engine, job_id)
    assert job is not None and job.state == "failed" and job.error == "database away"

    engine, running = _job(db_url)
    job_store.claim(engine, running, "alive", lease_sec=30)
    assert not job_store.fail_unclaimed(engine, running, error="x")


def test_cancel_of_a_queued_job_ends_it_at_once(db_url: str) -> None:
    engine, job_id = _job(db_url)
    job = job_store.request_cancel(engine, job_id)
    assert job is not None and job.state == "cancelled"
    assert job_store.request_cancel(engine, "0" * 32) is None


def test_a_model_is_stored_once_however_many_jobs_run_it(db_url: str) -> None:
    """Issue 21: every submit copied the model into its job row."""
    from sqlalchemy import func, insert, select

    from tunefarm.tuning_db.schema import JobRow, ModelBlobRow

    engine, first = _job(db_url)
    reads: list[int] = []

    def read() -> bytes:
        reads.append(1)
        return b"onnx"

    sha256 = hashlib.sha256(b"onnx").hexdigest()
    job_store.store_model_blob(engine, sha256, read)
    second = job_store.create_job(
        engine, model_name="m.onnx", model_sha256=sha256, options={"target": "llvm", "trials": 4}
    ).id
    assert reads == []  # already stored: the bytes were not even read
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(ModelBlobRow)).scalar() == 1
        blobs = connection.execute(select(JobRow.model_onnx).where(JobRow.id == second))
        assert blobs.scalar() is None
    assert job_store.read_model(engine, first) == job_store.read_model(engine, second) == b"onnx"
    # A job from before model_blobs carries its model in its own row.
    with engine.begin() as connection:
        connection.execute(
            insert(JobRow).values(
                id="0" * 32,
                state="queued",
                model_name="old.onnx",
                model_sha256="f" * 64,
                model_onnx=b"old",
                options_json="{}",
                progress_json="{}",
                cancel_requested=False,
                attempts=0,
                created_at=datetime.now(timezone.utc),
                updated_at=datetime.now(timezone.utc),
            )
        )
    assert job_store.read_model(engine, "0" * 32) == b"old"


def test_a_job_whose_queue_message_is_lost_is_found_again(db_url: str) -> None:
    """Issue 21: a Redis restarted without its data loses the jobs queue; the rows remain."""
    engine, job_id = _job(db_url)  # queued, and (here) never sent at all
    assert job_store.abandoned_jobs(engine) == []  # only dead coordinators, by default
    assert job_store.abandoned_jobs(engine, unclaimed_after_sec=60) == []  # too young
    time.sleep(0.3)
    assert job_store.abandoned_jobs(engine, unclaimed_after_sec=0.2) == [job_id]
    assert job_store.mark_requeued(engine, job_id, hold_sec=0.2)
    assert job_store.abandoned_jobs(engine, unclaimed_after_sec=0.2) == []  # held
    time.sleep(0.3)
    # Its requeue message was lost too: found again once the hold runs out.
    assert job_store.abandoned_jobs(engine, unclaimed_after_sec=0.2) == [job_id]
    assert job_store.claim(engine, job_id, "coordinator", lease_sec=30)
    assert job_store.abandoned_jobs(engine, unclaimed_after_sec=0.2) == []
