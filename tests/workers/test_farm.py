"""The farm with real Redis and real worker processes: no mocks."""

from __future__ import annotations

import signal
import time

import tvm
from tvm.s_tir.meta_schedule.arg_info import ArgInfo

from tests.fixtures.bad_candidates import args_info, crashing, hanging
from tests.tuning_db.workloads import matmul
from tests.workers.conftest import StartWorker
from tunefarm.tuner.targets import parse_target
from tunefarm.tuner.trial import MeasureSettings, TrialRequest
from tunefarm.workers.celery_app import create_app
from tunefarm.workers.farm_executor import CeleryTrialExecutor
from tunefarm.workers.measure_tasks import MEASURE_TASK, batch_payload
from tunefarm.workers.queues import measure_queue

TARGET = parse_target("llvm")
FAST = MeasureSettings(number=2, repeat=1, min_repeat_ms=1)


def _request(mod: tvm.ir.IRModule, args: list[list[object]] | None = None) -> TrialRequest:
    if args is None:
        args = [info.as_json() for info in ArgInfo.from_prim_func(mod["main"])]
    return TrialRequest(
        mod_json=tvm.ir.save_json(mod), target_json=str(TARGET), args_info=args, settings=FAST
    )


def _executor(broker_url: str, **options: float) -> CeleryTrialExecutor:
    return CeleryTrialExecutor(create_app(broker_url), measure_queue(TARGET), **options)  # type: ignore[arg-type]


def test_crashing_and_hanging_candidates_are_errors_and_the_worker_goes_on(
    start_worker: StartWorker, broker_url: str
) -> None:
    worker = start_worker(timeout_sec=3)
    executor = _executor(broker_url, chunk_size=8)
    bad_args = args_info()
    handles = executor.submit(
        [_request(crashing(), bad_args), _request(matmul()), _request(hanging(), bad_args)]
    )
    crash, good, hang = (handle.result() for handle in handles)
    assert crash.error == "the measuring process died on this candidate"
    assert good.error is None and good.run_secs
    assert hang.error is not None and hang.error.startswith("timed out after 3 s")
    assert worker.process.poll() is None  # the worker survived
    (after,) = (handle.result() for handle in executor.submit([_request(matmul())]))
    assert after.error is None and after.run_secs


def test_a_pickled_message_is_refused_and_never_runs(
    start_worker: StartWorker, broker_url: str
) -> None:
    worker = start_worker()
    app = create_app(broker_url)
    pickled = app.send_task(
        MEASURE_TASK,
        args=[batch_payload([_request(matmul())])],
        queue=measure_queue(TARGET),
        serializer="pickle",
    )
    deadline = time.monotonic() + 30
    while "untrusted content" not in worker.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "Refusing to deserialize untrusted content of type pickle" in worker.log.read_text()
    assert pickled.state == "PENDING"  # never started, never finished
    # And the worker still serves JSON batches.
    (after,) = (handle.result() for handle in _executor(broker_url).submit([_request(matmul())]))
    assert after.error is None and after.run_secs


def test_a_killed_worker_costs_a_resend_not_the_batch(
    start_worker: StartWorker, broker_url: str
) -> None:
    doomed = start_worker(timeout_sec=2)
    executor = _executor(broker_url, chunk_size=1, timeout_sec=2, silence_slack_sec=3)
    handles = executor.submit([_request(matmul(n)) for n in (64, 96, 128, 160)])
    deadline = time.monotonic() + 30
    while not any(handle.done() for handle in handles) and time.monotonic() < deadline:
        time.sleep(0.05)
    doomed.process.send_signal(signal.SIGKILL)  # mid-batch: the next chunk is in its hands
    doomed.process.wait()
    start_worker(timeout_sec=2)
    results = [handle.result() for handle in handles]
    assert all(result.error is None and result.run_secs for result in results), results
    assert executor.resent >= 1


def test_a_batch_taken_by_a_worker_that_died_before_starting_it_is_sent_again(
    start_worker: StartWorker, broker_url: str
) -> None:
    import redis

    executor = _executor(broker_url, chunk_size=1, timeout_sec=5, silence_slack_sec=2)
    (handle,) = executor.submit([_request(matmul())])
    # A worker takes the message off the queue and dies before it starts: its message would
    # sit unacknowledged for the whole visibility timeout.
    client = redis.Redis.from_url(broker_url)
    assert client.rpop(measure_queue(TARGET)) is not None
    start_worker()
    result = handle.result()
    assert result.error is None and result.run_secs
    assert executor.resent == 1


def test_a_worker_with_several_processes_takes_several_chunks_at_once(
    start_worker: StartWorker, broker_url: str
) -> None:
    start_worker("--concurrency", "2")
    executor = _executor(broker_url, chunk_size=1)
    # Long enough that a process taking its chunk up late on a loaded 2-core CI machine (0.43 s
    # seen) still starts while the other is timing.
    slow = MeasureSettings(number=1, repeat=1, min_repeat_ms=1500)
    requests = [
        TrialRequest(
            mod_json=tvm.ir.save_json(matmul(n)),
            target_json=str(TARGET),
            args_info=[info.as_json() for info in ArgInfo.from_prim_func(matmul(n)["main"])],
            settings=slow,
        )
        for n in (64, 96)
    ]
    first, second = (handle.result() for handle in executor.submit(requests))
    assert first.error is None and second.error is None, (first, second)
    # Both chunks were taken up together: the later one started before the earlier one had
    # finished, instead of waiting in the queue for it. Then one of them (whichever reached the
    # device second) waited while the other timed its candidate: one measurement at a time.
    earlier, later = sorted((first, second), key=lambda result: result.started_unix)
    earlier_end = (
        earlier.started_unix + earlier.build_sec + earlier.device_wait_sec + earlier.measure_sec
    )
    assert later.started_unix < earlier_end - 0.5, (earlier, later)
    assert max(earlier.device_wait_sec, later.device_wait_sec) > 0.3, (earlier, later)
