"""Where a library's time goes, kernel by kernel, inside the model (issue 16).

The Relax VM calls an instrument before and after every call it makes. Here that instrument
waits for the device before and after each kernel and reads the host clock, so every kernel is
timed where it runs: on the model's own tensors, after the kernel that ran before it, with the
caches that kernel left. That is the number a tuning record should predict.

The waits, the launch and the instrument's own calls cost microseconds (several on a GPU). A
one-kernel model whose kernel does next to nothing (32 additions) is timed the same way first,
and that floor is subtracted from every call. ``bench/gpu_fidelity.py`` checks the rest against
CUPTI's kernel times.

TVM 0.27's VM has no profiler of its own, and a library replayed as one CUDA graph shows no
calls to instrument: profile an executable built without the graph (the kernels are the same).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax, te
from tvm.target import Target

from tunefarm.tuner.launch_floor import empty_kernel_args
from tunefarm.tuner.targets import runtime_device

logger = logging.getLogger(__name__)

METHOD = (
    "each kernel timed in place by the Relax VM's instrument: device wait, call, device wait, "
    "less the launch floor; median over the runs"
)
BUILTIN_PREFIX = "vm.builtin."
FLOOR_KERNEL = "launch_floor"
FLOOR_RUNS = 50
"""The VM's own calls (allocation, shape checks): not kernels."""


@dataclass(frozen=True)
class KernelTime:
    name: str
    """The kernel's function in the library: a task's name for a tuned kernel."""
    calls: int
    """Calls in one run of the model."""
    us_per_run: float
    """Median over the runs of this kernel's time in one run (all its calls)."""

    @property
    def us_per_call(self) -> float:
        return self.us_per_run / self.calls


@dataclass(frozen=True)
class KernelProfile:
    kernels: list[KernelTime]
    """Heaviest first."""
    runs: int
    launch_floor_us: float
    """A next-to-empty kernel timed in place the same way: subtracted from every call."""

    @property
    def total_us(self) -> float:
        return sum(kernel.us_per_run for kernel in self.kernels)

    def by_name(self) -> dict[str, KernelTime]:
        return {kernel.name: kernel for kernel in self.kernels}

    def as_manifest(self, recorded_us: dict[str, float | None]) -> dict[str, Any]:
        """The manifest's ``in_model`` section; ``recorded_us`` is each task's best record."""
        total = self.total_us or 1.0
        rows = []
        for kernel in self.kernels:
            recorded = recorded_us.get(kernel.name)
            per_call = kernel.us_per_call
            rows.append(
                {
                    "name": kernel.name,
                    "calls": kernel.calls,
                    "us_per_call": round(per_call, 3),
                    "share": round(kernel.us_per_run / total, 4),
                    "recorded_us": round(recorded, 3) if recorded is not None else None,
                    "in_model_over_recorded": round(per_call / recorded, 3) if recorded else None,
                }
            )
        return {
            "method": METHOD,
            "runs": self.runs,
            "launch_floor_us": round(self.launch_floor_us, 3),
            "kernels_us_per_run": round(self.total_us, 2),
            "kernels": rows,
        }


def profile_kernels(
    library: Any,
    target: Target,
    device: tvm.runtime.Device,
    args: list[Any],
    *,
    runs: int = 5,
    budget_sec: float = 2.0,
) -> KernelProfile:
    """Time every kernel of ``main`` in place over ``runs`` runs (after one untimed run).

    Runs stop early once ``budget_sec`` is spent (a slow model gets one or two).
    """
    floor_runs = _time_in_place(
        floor_model(target), device, empty_kernel_args(device)[:1], runs=FLOOR_RUNS
    )
    floor = statistics.median(us for run in floor_runs for us in run[FLOOR_KERNEL])
    per_run = _time_in_place(library, device, args, runs=runs, budget_sec=budget_sec)
    kernels = [
        KernelTime(
            name=name,
            calls=len(per_run[-1][name]),
            us_per_run=statistics.median(
                sum(max(0.0, us - floor) for us in run.get(name, [])) for run in per_run
            ),
        )
        for name in per_run[-1]
    ]
    kernels.sort(key=lambda kernel: -kernel.us_per_run)
    return KernelProfile(kernels=kernels, runs=len(per_run), launch_floor_us=floor)


def _time_in_place(
    library: Any,
    device: tvm.runtime.Device,
    args: list[Any],
    *,
    runs: int,
    budget_sec: float | None = None,
) -> list[dict[str, list[float]]]:
    """Per run, each kernel's calls in µs: waits, call and instrument included."""
    vm = relax.VirtualMachine(library, device)
    main = vm["main"]
    main(*args)  # loads kernels and allocates the pool outside the timed runs
    per_run: list[dict[str, list[float]]] = []
    current: dict[str, list[float]] = defaultdict(list)
    started: list[float] = []

    def instrument(
        func: Any, symbol: str, before_run: bool, ret_value: Any, *call_args: Any
    ) -> int:
        if symbol.startswith(BUILTIN_PREFIX):
            return 0
        device.sync()
        if before_run:
            started.append(time.perf_counter())
        else:
            current[symbol].append((time.perf_counter() - started.pop()) * 1e6)
        return 0

    vm.set_instrument(tvm.runtime.convert(instrument))
    deadline = time.perf_counter() + (budget_sec if budget_sec is not None else float("inf"))
    try:
        while len(per_run) < runs and (not per_run or time.perf_counter() < deadline):
            current = defaultdict(list)
            main(*args)
            device.sync()
            per_run.append(current)
    finally:
        vm.set_instrument(None)
    return per_run


def floor_model(target: Target) -> Any:
    """A model of one kernel that adds 1 to 32 floats (one warp on a GPU)."""
    from tvm.script import relax as R

    builder = relax.BlockBuilder()
    data = relax.Var("data", R.Tensor((32,), "float32"))
    with builder.function("main", [data]):
        with builder.dataflow():
            added = builder.emit_te(
                lambda tensor: te.compute((32,), lambda i: tensor[i] + 1.0),
                data,
                primfunc_name_hint=FLOOR_KERNEL,
            )
            out = builder.emit_output(added)
        builder.emit_func_output(out)
    # TVM's default pipeline (dlight on GPUs), not build.compile_untuned: this is no baseline.
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.compile(builder.get(), target=target)


def in_model_profile(
    load: Callable[[], Any], *, target: Target, inputs: list[np.ndarray]
) -> KernelProfile | str:
    """The kernel profile of the library ``load()`` gives, or why it could not be taken.

    Like the other reports after a build, it never fails a compile: nothing here raises, the
    loading or building of the profiled library included.
    """
    try:
        device = runtime_device(target)
        args = [tvm.runtime.tensor(array, device=device) for array in inputs]
        return profile_kernels(load(), target, device, args)
    except Exception as err:
        logger.warning("the in-model kernel profile failed", exc_info=True)
        return (
            f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        )
