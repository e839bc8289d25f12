"""Farm jobs end to end: real Redis, real PostgreSQL, real worker and coordinator processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import tvm
from sqlalchemy import func, select
from tvm import relax

from tests.workers.conftest import RedisServer, StartWorker, WorkerProcess
from tunefarm.tuning_db import job_store
from tunefarm.tuning_db.job_store import JobView
from tunefarm.tuning_db.schema import TuningRecordRow
from tunefarm.tuning_db.sql_database import open_engine

LEASE_SEC = "4"


def _farm_env(broker_url: str, db_url: str) -> dict[str, str]:
    return {
        "TUNEFARM_BROKER_URL": broker_url,
        "TUNEFARM_DATABASE_URL": db_url,
        "TUNEFARM_JOB_LEASE_SEC": LEASE_SEC,
    }


def _compile(model: Path, out: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tunefarm",
            "compile",
            str(model),
            "--farm",
            "--out",
            str(out),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def _wait_for(condition: Callable[[], JobView | None], timeout: float, what: str) -> JobView:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = condition()
        if job is not None:
            return job
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _record_counts(db_url: str) -> tuple[int, int]:
    """All tuning records, and the distinct (workload, target, trace) among them."""
    with open_engine(db_url).connect() as connection:
        rows = connection.execute(select(func.count()).select_from(TuningRecordRow)).scalar_one()
        distinct = connection.execute(
            select(func.count()).select_from(
                select(
                    TuningRecordRow.workload_id,
                    TuningRecordRow.target_key,
                    TuningRecordRow.trace_hash,
                )
                .distinct()
                .subquery()
            )
        ).scalar_one()
    return int(rows), int(distinct)


def _wait_for_trials(
    latest: Callable[[], JobView | None], more_than: int, what: str = "trials"
) -> JobView:
    return _wait_for(
        lambda: ((j := latest()) and j.progress.trials > more_than and j) or None,
        180,
        what,
    )


def _only_job(db_url: str) -> Callable[[], JobView | None]:
    engine = open_engine(db_url)

    def latest() -> JobView | None:
        jobs = job_store.list_jobs(engine)
        return jobs[0] if jobs else None

    return latest


def test_a_job_is_measured_by_two_workers_and_matches_onnxruntime(
    start_worker: StartWorker,
    broker_url: str,
    farm_db_url: str,
    tiny_cnn_path: Path,
    tmp_path: Path,
) -> None:
    env = _farm_env(broker_url, farm_db_url)
    measure = [start_worker(env=env), start_worker(env=env)]
    start_worker("--jobs", env=env)
    client = _compile(
        tiny_cnn_path, tmp_path / "out", env, "--trials", "24", "--seed", "5", "--no-baseline"
    )
    stdout, stderr = client.communicate(timeout=600)
    assert client.returncode == 0, stderr
    assert len(stdout.strip().splitlines()) == 5  # no progress output into a pipe
    assert "untuned skipped (--no-baseline)" in stdout

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    # --no-baseline travels with the job to the coordinator.
    assert manifest["latency"]["baseline"]["source"] == "skipped"
    assert manifest["vs_onnxruntime"]["latency"]["p50_ms"] > 0
    assert manifest["tuning"]["trials_run"] == 24
    measured_by = manifest["tuning"]["measured_by"]
    assert sum(measured_by.values()) == 24
    for worker in measure:
        assert any(name.startswith(worker.name) for name in measured_by), measured_by

    job = _only_job(farm_db_url)()
    assert job is not None and job.state == "succeeded" and job.attempts == 1
    assert job.progress.trials == 24
    assert any(task.curve for task in job.progress.tasks.values())
    # Where the time went (issue 16): the search loop's part and the workers' part.
    split = job.progress.time_split
    assert split is not None
    assert split["coordinator"]["search_sec"] > 0
    assert split["coordinator"]["first_batch_sent_sec"] is not None
    # The workers also timed the default schedules before the search.
    assert split["workers"]["trials"] >= 24
    assert split["workers"]["build_sec"] > 0 and split["workers"]["run_sec"] > 0
    # Holding the device is part of the run.
    assert 0 < split["workers"]["device_sec"] <= split["workers"]["run_sec"]

    vm = relax.VirtualMachine(
        tvm.runtime.load_module(str(tmp_path / "out" / "model.so")), tvm.cpu()
    )
    image = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype("float32")
    session = onnxruntime.InferenceSession(str(tiny_cnn_path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"image": image})
    np.testing.assert_allclose(
        vm["main"](tvm.runtime.tensor(image)).numpy(), expected, rtol=1e-4, atol=1e-4
    )


def test_a_pt2_program_goes_to_the_farm_as_onnx_converted_by_the_client(
    start_worker: StartWorker, broker_url: str, farm_db_url: str, tmp_path: Path
) -> None:
    from tests.tuner.test_torch_import import _saved

    program, _ = _saved(tmp_path)
    env = _farm_env(broker_url, farm_db_url)
    start_worker(env=env)
    start_worker("--jobs", env=env)
    client = _compile(program, tmp_path / "out", env, "--trials", "4", "--no-baseline")
    _, stderr = client.communicate(timeout=600)
    assert client.returncode == 0, stderr
    assert "converted small.pt2 to ONNX here (small.onnx)" in stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["format"] == "onnx"
    assert manifest["tuning"]["trials_run"] == 4
    job = _only_job(farm_db_url)()
    assert job is not None and job.model_name == "small.onnx"

    # A job left behind (a Ctrl-C on compile --farm) is in reach: follow it, download it.
    library = (tmp_path / "out" / "model.so").read_bytes()
    for command in (["follow", job.id, "--out"], ["download", job.id, "--out"]):
        folder = tmp_path / command[0]
        again = subprocess.run(
            [sys.executable, "-m", "tunefarm", "jobs", *command, str(folder)],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=300,
        )
        assert again.returncode == 0, again.stderr
        assert (folder / "model.so").read_bytes() == library
        assert json.loads((folder / "manifest.json").read_text()) == manifest


def test_a_job_with_no_measure_worker_for_its_target_says_so(
    start_worker: StartWorker,
    broker_url: str,
    farm_db_url: str,
    tiny_cnn_path: Path,
    tmp_path: Path,
) -> None:
    # Batches wait 20 s for a worker here (10 minutes by default).
    env = {**_farm_env(broker_url, farm_db_url), "TUNEFARM_MEASURE_QUEUE_TIMEOUT_SEC": "20"}
    start_worker("--jobs", env=env)  # a coordinator, and no measure worker at all
    client = _compile(tiny_cnn_path, tmp_path / "out", env, "--trials", "8")
    latest = _only_job(farm_db_url)
    try:
        job = _wait_for(
            lambda: (
                ((j := latest()) and "no live measure worker" in (j.progress.message or "") and j)
                or None
            ),
            120,
            "the job to say that no worker serves its queue",
        )
        assert job.state == "tuning"
        assert "serves queue measure.llvm." in (job.progress.message or "")
        # Then the promised failure, naming the queue, and the client says so.
        failed = _wait_for(
            lambda: ((j := latest()) and j.finished and j) or None, 180, "the job to fail"
        )
        assert failed.state == "failed", failed
        assert "no measure worker took the batch" in (failed.error or "")
        assert "measure.llvm." in (failed.error or "")
        _, stderr = client.communicate(timeout=60)
        assert client.returncode != 0
        assert "measure.llvm." in stderr
    finally:
        if (job := latest()) is not None and not job.finished:
            job_store.request_cancel(open_engine(farm_db_url), job.id)
        if client.poll() is None:
            client.kill()
            client.wait(timeout=60)


def test_cancel_stops_new_trials_within_seconds(
    start_worker: StartWorker,
    broker_url: str,
    farm_db_url: str,
    tiny_cnn_path: Path,
    tmp_path: Path,
) -> None:
    env = _farm_env(broker_url, farm_db_url)
    start_worker(env=env)
    start_worker("--jobs", env=env)
    client = _compile(tiny_cnn_path, tmp_path / "out", env, "--trials", "5000")
    latest = _only_job(farm_db_url)
    job = _wait_for_trials(latest, 0, "the first trials")
    result = subprocess.run(
        [sys.executable, "-m", "tunefarm", "jobs", "cancel", job.id, "--db", farm_db_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    asked = time.monotonic()
    job = _wait_for(lambda: ((j := latest()) and j.finished and j) or None, 30, "the cancel")
    assert job.state == "cancelled"
    assert time.monotonic() - asked < 15
    trials = job.progress.trials
    time.sleep(3)
    assert (latest() or job).progress.trials == trials  # nothing more was measured
    assert client.wait(timeout=60) == 1
    assert "was cancelled" in (client.stderr.read() if client.stderr else "")


def test_a_killed_coordinator_is_resumed_by_another(
    start_worker: StartWorker,
    broker_url: str,
    farm_db_url: str,
    tiny_cnn_path: Path,
    tmp_path: Path,
) -> None:
    env = _farm_env(broker_url, farm_db_url)
    start_worker(env=env)
    coordinators = [start_worker("--jobs", env=env), start_worker("--jobs", env=env)]
    client = _compile(tiny_cnn_path, tmp_path / "out", env, "--trials", "48", "--seed", "2")
    latest = _only_job(farm_db_url)
    job = _wait_for_trials(latest, 7, "the job to be tuning")
    owner_pid = int(job.lease_owner.split("-")[1].split("@")[0])  # coordinator-<pid>@host
    holder: WorkerProcess = next(c for c in coordinators if c.process.pid == owner_pid)
    holder.kill()

    _, stderr = client.communicate(timeout=600)
    assert client.returncode == 0, stderr
    job = latest()
    assert job is not None and job.state == "succeeded"
    assert job.attempts == 2
    # The second coordinator spent only what the first had left of the budget.
    assert job.manifest is not None
    before = job.manifest["tuning"]["trials_before_resume"]
    assert before >= 8
    assert job.manifest["tuning"]["trials_run"] == 48 - before
    assert job.progress.trials == 48
    rows, distinct = _record_counts(farm_db_url)
    assert rows == distinct  # no duplicate records after the resume


@pytest.mark.parametrize("bad", ["not-a-hex-id", "0" * 31])
def test_a_job_message_with_a_bad_id_is_refused(bad: str) -> None:
    from tunefarm.workers.job_tasks import run_job_task

    with pytest.raises(ValueError, match="not a job id"):
        run_job_task.run(bad)


def test_killing_measure_workers_again_and_again_the_job_still_completes(
    start_worker: StartWorker,
    broker_url: str,
    farm_db_url: str,
    tiny_cnn_path: Path,
    tmp_path: Path,
) -> None:
    env = {**_farm_env(broker_url, farm_db_url), "TUNEFARM_MEASURE_TIMEOUT_SEC": "5"}
    start_worker("--jobs", env=env)
    victims = [start_worker(env=env), start_worker(env=env)]
    client = _compile(tiny_cnn_path, tmp_path / "out", env, "--trials", "40", "--seed", "4")
    latest = _only_job(farm_db_url)
    for round_index, victim in enumerate(victims):
        _wait_for_trials(latest, 4 + 8 * round_index, "trials before a kill")
        victim.kill()  # mid-batch
        start_worker(env=env)
    _, stderr = client.communicate(timeout=600)
    assert client.returncode == 0, stderr
    job = latest()
    assert job is not None and job.state == "succeeded"
    rows, distinct = _record_counts(farm_db_url)
    assert rows == distinct > 0


def test_a_redis_restart_mid_job_never_leaves_it_hanging(
    start_worker: StartWorker,
    own_redis: RedisServer,
    farm_db_url: str,
    tiny_cnn_path: Path,
    tmp_path: Path,
) -> None:
    env = _farm_env(own_redis.url, farm_db_url)
    start_worker(env=env)
    start_worker("--jobs", env=env)
    client = _compile(tiny_cnn_path, tmp_path / "out", env, "--trials", "40", "--seed", "6")
    latest = _only_job(farm_db_url)
    _wait_for_trials(latest, 0, "the first trials")
    own_redis.kill()
    time.sleep(2)
    own_redis.start()  # empty: every queued message and result is gone
    try:
        client.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        client.kill()
        raise AssertionError(f"the job hung after a Redis restart: {latest()}") from None
    job = latest()
    assert job is not None and job.finished
    if job.state == "failed":
        assert job.error  # a clear reason
    else:
        assert job.state == "succeeded"
        assert (tmp_path / "out" / "model.so").exists()
