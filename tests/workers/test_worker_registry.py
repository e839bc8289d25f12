"""Workers advertise their capacity in the real Redis; chunks follow the live workers."""

from __future__ import annotations

import time

from tunefarm.workers.worker_registry import QueueCapacity, advertise, live_workers, working_on


def test_one_chunk_per_pool_process_of_the_live_workers(broker_url: str) -> None:
    capacity = QueueCapacity(broker_url, "measure.test")
    assert capacity.chunk_size(64, fallback=4) == 4  # nobody there: the fallback

    stops = [
        advertise(broker_url, "measure.test", "gpu-worker", 15),
        advertise(broker_url, "measure.test", "cpu-worker", 1),
        advertise(broker_url, "measure.other", "elsewhere", 8),
    ]
    time.sleep(1.2)  # the registry is read at most once a second
    assert sorted(capacity.capacities()) == [1, 15]
    assert capacity.chunk_size(64, fallback=4) == 4  # 16 processes: 16 chunks of 4
    assert capacity.chunk_size(10, fallback=4) == 1

    for stop in stops:
        stop.set()
    time.sleep(1.2)
    assert capacity.capacities() == []  # a stopped worker takes its entry with it


def test_the_dashboard_sees_each_worker_and_the_batches_it_measures(broker_url: str) -> None:
    stop = advertise(broker_url, "measure.dash", "busy-worker", 3)
    try:
        deadline = time.monotonic() + 5
        while not any(w.name == "busy-worker" for w in live_workers(broker_url)):
            assert time.monotonic() < deadline, "the advertisement never showed"
            time.sleep(0.05)
        with working_on(broker_url, "measure.dash", "busy-worker", candidates=16):
            with working_on(broker_url, "measure.dash", "busy-worker", candidates=4):
                (seen,) = [w for w in live_workers(broker_url) if w.name == "busy-worker"]
                assert (seen.queue, seen.concurrency) == ("measure.dash", 3)
                assert sorted(b.candidates for b in seen.batches) == [4, 16]
        (seen,) = [w for w in live_workers(broker_url) if w.name == "busy-worker"]
        assert seen.batches == []  # finished batches leave the entry
    finally:
        stop.set()
