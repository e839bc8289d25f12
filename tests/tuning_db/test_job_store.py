"""Job rows: the lease fences writes, abandoned jobs are found once, unclaimed ones can fail."""

from __future__ import annotations

import time

from sqlalchemy import Engine

from tunefarm.tuning_db import job_store
from tunefarm.tuning_db.sql_database import open_engine


def _job(url: str) -> tuple[Engine, str]:
    engine = open_engine(url)
    job_id = job_store.create_job(
        engine, model_name="m.onnx", model_onnx=b"onnx", options={"target": "llvm", "trials": 4}
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
