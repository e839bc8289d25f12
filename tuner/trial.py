"""One tuning trial: build a scheduled TIR module and time it, in a process that imported TVM once.

This is the unit of work of a measure worker, local or on the farm. A candidate arrives as JSON
(``tvm.ir.save_json`` of the scheduled module plus the target and argument info) and leaves as
a ``TrialResult``: run times or an error string. Failures are data; nothing here raises for a bad
candidate.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunefarm.tuner.launch_floor import built_empty_kernel, evaluator_floor_sec, l2_flush_bytes
from tunefarm.tuner.targets import runtime_device

MIN_RUN_SEC = 1e-7
"""A kernel faster than the launch floor is reported as 0.1 µs, never 0 or less."""


@dataclass(frozen=True)
class MeasureSettings:
    """How each candidate is timed (the fields of MetaSchedule's ``EvaluatorConfig``)."""

    number: int = 3
    repeat: int = 1
    min_repeat_ms: int = 20
    enable_cpu_cache_flush: bool = False
    cold_cache: bool = False
    """Time one call per repeat (``number`` and ``min_repeat_ms`` are not used), with twice the
    L2 overwritten before each, and subtract the launch floor (``tuner.launch_floor``).

    Issue 16: timed back to back, a kernel reads its weights from the L2 the last call left
    warm, and ResNet-50's convs then ran 1.5-1.7x faster than in the model, where each kernel's
    weights come from HBM. Flushed, the time is what the model sees (bench/gpu_fidelity.py)."""


GPU_MEASURE = MeasureSettings(repeat=30, cold_cache=True)
"""How GPU candidates are timed: cold L2, 30 single calls."""


def measure_settings_for(target: Any) -> MeasureSettings:
    """The default timing of ``target``'s candidates."""
    return GPU_MEASURE if target.kind.name != "llvm" else MeasureSettings()


@dataclass(frozen=True)
class TrialRequest:
    mod_json: str
    """``tvm.ir.save_json`` of the scheduled IRModule."""
    target_json: str
    args_info: list[Any]
    """``ArgInfo.as_json()`` of each argument: ``["TENSOR", dtype, shape]``."""
    device_id: int = 0
    settings: MeasureSettings = field(default_factory=MeasureSettings)


@dataclass(frozen=True)
class TrialResult:
    run_secs: list[float] | None
    error: str | None
    build_sec: float = 0.0
    measure_sec: float = 0.0
    """Making the arguments and timing, without waiting for the device (``device_wait_sec``)."""
    worker: str | None = None
    """Which process measured it: ``host/pid`` locally, the Celery worker's name on the farm."""
    started_unix: float = 0.0
    """When a measuring process took it up (``time.time()``): the queueing ends there."""
    device_wait_sec: float = 0.0
    """Waiting for the device while other processes timed their candidates on it."""
    device_sec: float = 0.0
    """Holding the device (the measure lock): the timing itself, what the GPU's timer is busy
    with. Its sum over the wall time is the timer's busy share."""


def this_worker() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


# Only one candidate is timed at a time per device, whatever builds beside it.
_measure_lock: Any = threading.Lock()


def set_measure_lock(lock: Any) -> None:
    """Share one lock among the processes that time candidates on the same device."""
    global _measure_lock
    _measure_lock = lock


def warm_up() -> None:
    """Import what every trial needs, once per process."""
    # Not tvm.s_tir.tensor_intrin (11 s to import): candidates arrive already scheduled, so
    # tensorized blocks are plain TIR by now and building them needs no registered intrinsics.
    from tunefarm.tuner.cpu_threads import use_physical_cores

    use_physical_cores()  # a trial is timed on as many threads as the library will run on
    import tvm  # noqa: F401
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock  # noqa: F401


def run_trial(request: TrialRequest) -> TrialResult:
    """Build and time one candidate; never raises for a bad candidate."""
    import tvm
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    started_unix = time.time()
    started = time.perf_counter()
    try:
        target = tvm.target.Target(request.target_json)
        mod = tvm.ir.load_json(request.mod_json)
        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
        rt_mod = tvm_build(mod, target=target)
    except Exception as err:
        return TrialResult(
            None,
            f"build failed: {_describe(err)}",
            build_sec=time.perf_counter() - started,
            worker=this_worker(),
            started_unix=started_unix,
        )
    built = time.perf_counter()
    waited = 0.0
    held = 0.0
    try:
        device = runtime_device(target, request.device_id)
        args = [_random_argument(tvm, info, device) for info in request.args_info]
        settings = request.settings
        cold = settings.cold_cache
        flush_bytes = l2_flush_bytes(device) if cold else 0
        evaluator = rt_mod.time_evaluator(
            rt_mod.entry_name,
            device,
            number=1 if cold else settings.number,
            repeat=settings.repeat,
            min_repeat_ms=0 if cold else settings.min_repeat_ms,
            f_preproc="cache_flush_cpu_non_first_arg" if settings.enable_cpu_cache_flush else "",
            cache_flush_bytes=flush_bytes,
        )
        if cold:
            built_empty_kernel(target)  # NVRTC, once per process: not while holding the device
        waiting = time.perf_counter()
        with _measure_lock:
            locked = time.perf_counter()
            waited = locked - waiting
            floor = evaluator_floor_sec(target, device, flush_bytes) if cold else 0.0
            device.sync()
            run_secs = [max(float(sec) - floor, MIN_RUN_SEC) for sec in evaluator(*args).results]
            held = time.perf_counter() - locked
    except Exception as err:
        return TrialResult(
            None,
            f"run failed: {_describe(err)}",
            build_sec=built - started,
            measure_sec=time.perf_counter() - built - waited,
            worker=this_worker(),
            started_unix=started_unix,
            device_wait_sec=waited,
            device_sec=held,
        )
    return TrialResult(
        run_secs,
        None,
        build_sec=built - started,
        measure_sec=time.perf_counter() - built - waited,
        worker=this_worker(),
        started_unix=started_unix,
        device_wait_sec=waited,
        device_sec=held,
    )


def _random_argument(tvm: Any, info: list[Any], device: Any) -> Any:
    kind, dtype, shape = info
    if kind != "TENSOR":
        raise ValueError(f"unsupported argument kind {kind!r}")
    if "float" in dtype:
        data = np.random.uniform(-1.0, 1.0, size=shape).astype(dtype)
    elif dtype == "bool":
        data = np.random.randint(0, 2, size=shape).astype(dtype)
    else:
        data = np.random.randint(0, 8, size=shape).astype(dtype)
    return tvm.runtime.tensor(data, device=device)


def _describe(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    # TVM errors carry a C++ backtrace; the last lines say what went wrong.
    lines = [line for line in text.splitlines() if line.strip()]
    summary = "\n".join(lines[-6:]) if len(lines) > 6 else text
    return f"{type(err).__name__}: {summary}" if summary else traceback.format_exc(limit=1)
