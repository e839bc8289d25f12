"""What timing one GPU call costs when the call does nothing: the floor under a cold-L2 time.

TVM's ``time_evaluator`` waits for the device before it records its start event, so on a GPU a
repeat of one call also times the launch: 7-14 µs on the H200 (``bench/gpu_fidelity.py``), as
much as a small kernel runs. A cold-L2 measurement has to time one call per repeat (the flush
goes between repeats), so the floor is measured once per process and device, with a
next-to-empty kernel timed exactly as a candidate is, and subtracted. The empty kernel's own
microsecond or two goes with it, so a kernel reads at most that much fast.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import tvm
from tvm import te
from tvm.driver import build as tvm_build
from tvm.s_tir import Schedule
from tvm.target import Target

FLOOR_REPEATS = 50
DEFAULT_L2_BYTES = 64 * 1024**2
"""When the device does not say (a CPU, or a driver that reports 0): larger than any GPU's L2
up to the H200's, and than most CPUs' last-level cache."""

_floors: dict[tuple[str, int, int], float] = {}
_built: dict[str, Any] = {}


def built_empty_kernel(target: Target) -> Any:
    """``empty_kernel(target)``, built once per process.

    Call it before taking the device: NVRTC takes about a second, and on the H200 host 15
    processes each building it while holding the device lock kept the first batch's
    candidates waiting 1.6 s each (issue 16's first ``time_split``).
    """
    key = str(target)
    if key not in _built:
        _built[key] = empty_kernel(target)
    return _built[key]


def empty_kernel(target: Target) -> Any:
    """A kernel that adds 1 to 32 floats: one warp on a GPU."""
    data = te.placeholder((32,), "float32", name="data")
    out = te.compute((32,), lambda i: data[i] + 1.0, name="out")
    schedule = Schedule(te.create_prim_func([data, out]))
    if target.kind.name != "llvm":
        (loop,) = schedule.get_loops(schedule.get_sblock("out"))
        schedule.bind(loop, "threadIdx.x")
    return tvm_build(schedule.mod, target=target)


def empty_kernel_args(device: tvm.runtime.Device) -> list[Any]:
    return [tvm.runtime.tensor(np.zeros(32, "float32"), device=device) for _ in range(2)]


def l2_flush_bytes(device: tvm.runtime.Device) -> int:
    """Twice the L2: the evaluator copies one such buffer into another before each repeat."""
    return 2 * (int(device.l2_cache_size_bytes or 0) or DEFAULT_L2_BYTES)


def evaluator_floor_sec(target: Target, device: tvm.runtime.Device, flush_bytes: int) -> float:
    """The median time of the empty kernel, one call per repeat after a flush (cached).

    Time it with the device to itself (under the measure lock), but build it before.
    """
    key = (str(target), device.index, flush_bytes)
    if key not in _floors:
        module = built_empty_kernel(target)
        evaluator = module.time_evaluator(
            module.entry_name,
            device,
            number=1,
            repeat=FLOOR_REPEATS,
            min_repeat_ms=0,
            cache_flush_bytes=flush_bytes,
        )
        _floors[key] = statistics.median(evaluator(*empty_kernel_args(device)).results)
    return _floors[key]
