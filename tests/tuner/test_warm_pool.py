"""The warm pool when Ctrl-C leaves it: nothing of it may outlive the ``with``."""

from __future__ import annotations

import time

import pytest
import tvm

from tests.fixtures.bad_candidates import args_info, hanging
from tunefarm.tuner.trial import TrialRequest
from tunefarm.tuner.warm_pool import WarmPool


def test_ctrl_c_ends_the_executors_manager_thread_before_the_pool_is_left() -> None:
    # If that thread still runs when Python exits, it closes its wakeup pipe while the exit
    # handler writes to it, and Ctrl-C ends with a "Bad file descriptor" traceback (CI, 12-07).
    pool = WarmPool(1, timeout_sec=60)
    spinning = TrialRequest(
        mod_json=tvm.ir.save_json(hanging()), target_json="llvm", args_info=args_info()
    )
    with pytest.raises(KeyboardInterrupt), pool:
        in_flight = pool.submit_one(spinning)
        manager = pool._executor._executor_manager_thread  # type: ignore[union-attr]
        assert manager is not None and manager.is_alive()
        started = time.monotonic()
        raise KeyboardInterrupt
    assert not manager.is_alive()
    assert in_flight.done()
    assert time.monotonic() - started < 30  # the trial in flight was not waited for
