"""Where a library's time goes, kernel by kernel, inside the model (issue 16).

The Relax VM calls an instrument before and after every call it makes. Here that instrument
waits for the device before and after each kernel and reads the host clock, so every kernel is
timed where it runs: on the model's own tensors, after the kernel that ran before it, with the
caches that kernel left. That is the number a tuning record should predict. Waiting and
launching cost several microseconds on a GPU: the same sequence around a kernel that does next
to nothing (one warp, 32 elements) is timed, and that floor is subtracted from every call. What
is left is within about a microsecond of CUPTI's kernel time (bench/gpu_fidelity.py checks).

TVM 0.27's VM has no profiler of its own, and a library replayed as one CUDA graph shows no
calls to instrument: profile an executable built without the graph (the kernels are the same).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax, te
from tvm.s_tir import Schedule
from tvm.target import Target

BUILTIN_PREFIX = "vm.builtin."
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
    """Launching a next-to-empty kernel and waiting for it: subtracted from every call."""

    @property
    def total_us(self) -> float:
        return sum(kernel.us_per_run for kernel in self.kernels)

    def by_name(self) -> dict[str, KernelTime]:
        return {kernel.name: kernel for kernel in self.kernels}


def profile_kernels(
    library: Any, target: Target, device: tvm.runtime.Device, args: list[Any], *, runs: int = 5
) -> KernelProfile:
    """Time every kernel of ``main`` in place over ``runs`` runs (after one untimed run)."""
    vm = relax.VirtualMachine(library, device)
    main = vm["main"]
    main(*args)  # loads kernels and allocates the pool outside the timed runs
    floor = _launch_floor_us(target, device)
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
            elapsed_us = (time.perf_counter() - started.pop()) * 1e6
            current[symbol].append(max(0.0, elapsed_us - floor))
        return 0

    vm.set_instrument(tvm.runtime.convert(instrument))
    try:
        for _ in range(runs):
            current = defaultdict(list)
            main(*args)
            device.sync()
            per_run.append(current)
    finally:
        vm.set_instrument(None)
    names = {name for run in per_run for name in run}
    kernels = [
        KernelTime(
            name=name,
            calls=len(per_run[-1].get(name, [])),
            us_per_run=statistics.median(sum(run.get(name, [])) for run in per_run),
        )
        for name in names
    ]
    kernels = [kernel for kernel in kernels if kernel.calls > 0]
    kernels.sort(key=lambda kernel: -kernel.us_per_run)
    return KernelProfile(kernels=kernels, runs=runs, launch_floor_us=floor)


def _launch_floor_us(target: Target, device: tvm.runtime.Device, samples: int = 50) -> float:
    """What a wait, a launch of a next-to-empty kernel and a wait cost, timed as a call is."""
    kernel = _empty_kernel(target)
    data = tvm.runtime.tensor(np.zeros(32, "float32"), device=device)
    out = tvm.runtime.tensor(np.zeros(32, "float32"), device=device)
    kernel(data, out)
    times = []
    for _ in range(samples):
        device.sync()
        started = time.perf_counter()
        kernel(data, out)
        device.sync()
        times.append((time.perf_counter() - started) * 1e6)
    return statistics.median(times)


def _empty_kernel(target: Target) -> Any:
    data = te.placeholder((32,), "float32", name="data")
    out = te.compute((32,), lambda i: data[i] + 1.0, name="out")
    schedule = Schedule(te.create_prim_func([data, out]))
    if target.kind.name != "llvm":
        (loop,) = schedule.get_loops(schedule.get_sblock("out"))
        schedule.bind(loop, "threadIdx.x")
    return tvm.compile(schedule.mod, target=target)["main"]
