"""Workers advertise their capacity in the real Redis; chunks follow the live workers."""

from __future__ import annotations

import time

from tunefarm.workers.worker_registry import QueueCapacity, advertise


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
