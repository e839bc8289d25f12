"""Per chain, the faster of the tuned kernel and the vendor call (issue 17).

cuDNN's legacy API runs some convolutions on its Hopper kernels and others on a CUDA-core
fallback several times slower than a tuned TVM kernel (``bench/README.md``, "Vendor kernels").
So a chain goes to the vendor only where that is faster:

- the tuned side is the best record the database holds for the task the chain becomes once
  legalized and fused (the chain is rebuilt alone, lowered as the whole model would be, and
  looked up like any task); a chain with no record counts as not tuned;
- the vendor side is timed by ``time_vendor``, on this machine's GPU by default
  (``time_vendor_call``): the one call, alone in a module, as the library would make it.

A chain with no record goes to the vendor when the vendor call runs at all; with a record, only
when the vendor call is faster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.target import Target

from tunefarm.tuner.tasks import extract_tuning_tasks, look_up_tasks
from tunefarm.tuner.vendor_kernels import VendorCall, VendorSelect, vendor_call_expr

logger = logging.getLogger(__name__)

VendorTimer = Callable[[VendorCall], float | None]
"""Seconds per call of the vendor call alone, or None where it does not run."""


@dataclass(frozen=True)
class ChainChoice:
    task: str
    """The task the chain is when TVM compiles it."""
    tuned_us: float | None
    vendor_us: float | None
    vendor: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "tuned_us": self.tuned_us,
            "vendor_us": self.vendor_us,
            "chosen": "vendor" if self.vendor else "tuned",
        }


def choose(
    calls: dict[relax.Var, VendorCall],
    *,
    target: Target,
    database: Any,
    time_vendor: VendorTimer,
) -> tuple[set[relax.Var], list[ChainChoice]]:
    """The chains to hand to the vendor, and why, one ``ChainChoice`` per chain."""
    chosen: set[relax.Var] = set()
    choices: list[ChainChoice] = []
    vendor_times: dict[tuple[Any, ...], float | None] = {}
    for end, call in calls.items():
        task_name, tuned_sec = _tuned_time(call, target=target, database=database)
        # ResNet repeats its blocks: one timing per distinct call.
        key = _call_key(call)
        if key not in vendor_times:
            vendor_times[key] = time_vendor(call)
        vendor_sec = vendor_times[key]
        vendor = vendor_sec is not None and (tuned_sec is None or vendor_sec < tuned_sec)
        if vendor:
            chosen.add(end)
        choices.append(
            ChainChoice(
                task=task_name,
                tuned_us=round(tuned_sec * 1e6, 3) if tuned_sec is not None else None,
                vendor_us=round(vendor_sec * 1e6, 3) if vendor_sec is not None else None,
                vendor=vendor,
            )
        )
    return chosen, choices


def selector(
    *,
    target: Target,
    database_url: str,
    into: list[ChainChoice],
    time_vendor: VendorTimer | None = None,
) -> VendorSelect:
    """A ``VendorSelect`` for the pipeline that chooses by ``choose`` and leaves its reasons
    in ``into`` (the manifest's ``pipeline.vendor_choices``)."""

    def select(calls: dict[relax.Var, VendorCall]) -> set[relax.Var]:
        from tunefarm.tuning_db import SqlDatabase

        kept, made = choose(
            calls,
            target=target,
            database=SqlDatabase(database_url, target=target),
            time_vendor=time_vendor or (lambda call: time_vendor_call(call, target=target)),
        )
        into[:] = made  # a pipeline run again (another layout) chooses again
        return kept

    return select


def chain_module(call: VendorCall) -> IRModule:
    """The chain alone as a Relax module: its inputs are its free variables."""
    builder = relax.BlockBuilder()
    free = [call.x] + ([call.residual] if call.residual is not None else [])
    params = {var: relax.Var(f"in{i}", var.ty) for i, var in enumerate(free)}
    with builder.function("main", list(params.values())):
        with builder.dataflow():
            remap: dict[relax.Var, relax.Expr] = dict(params)
            last: relax.Expr | None = None
            for var, value in (*call.bindings, *call.fused_tail):
                args = [remap.get(arg, arg) for arg in value.args]
                last = builder.emit(relax.Call(value.op, args, value.attrs))
                remap[var] = last
            assert last is not None
            out = builder.emit_output(last)
        builder.emit_func_output(out)
    return builder.get()


def _tuned_time(call: VendorCall, *, target: Target, database: Any) -> tuple[str, float | None]:
    mod = chain_module(call)
    with target, tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(
            [
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
            ]
        )(mod)
    tasks = extract_tuning_tasks(mod, target=target)
    if not tasks:
        return "", None
    heaviest = tasks[0]  # the convolution or matmul, with its epilogue fused in
    look_up_tasks([heaviest], database=database, target=target)
    return heaviest.name, heaviest.best_sec_before


def _call_key(call: VendorCall) -> tuple[Any, ...]:
    return (
        call.func,
        str(call.x.ty),
        str(call.weight.ty),
        call.config,
    )


def time_vendor_call(call: VendorCall, *, target: Target, runs: int = 50) -> float | None:
    """The vendor call alone on this machine's GPU: median seconds per call after its first
    (which picks cuDNN's algorithm), less what a one-kernel model costs through the VM (the
    records' times have their launch floor subtracted too). Warm L2, where the records are
    cold: a small edge to the vendor. None if it fails to build or run."""
    from tunefarm.tuner.kernel_profile import floor_model
    from tunefarm.tuner.vendor_kernels import register_in_process

    try:
        register_in_process()
        x = relax.Var("x", call.x.ty)
        residual = relax.Var("r", call.residual.ty) if call.residual is not None else None
        params = [x] + ([residual] if residual is not None else [])
        builder = relax.BlockBuilder()
        with builder.function("main", params):
            out = builder.emit(vendor_call_expr(call, x, residual, out_ty=call.out_ty))
            builder.emit_func_output(out)
        executable = tvm.compile(builder.get(), target=target)
        device = tvm.cuda(0)
        vm = relax.VirtualMachine(executable, device)
        rng = np.random.default_rng(0)
        args = [
            tvm.runtime.tensor(
                rng.standard_normal([int(d) for d in p.ty.shape.values]).astype(str(p.ty.dtype)),
                device=device,
            )
            for p in params
        ]
        vm["main"](*args)
        timer = vm.time_evaluator("main", device, number=runs, repeat=3)
        seconds = float(np.median(timer(*args).results))
        floor_vm = relax.VirtualMachine(floor_model(target), device)
        floor_args = [tvm.runtime.tensor(np.zeros(32, dtype="float32"), device=device)]
        floor_timer = floor_vm.time_evaluator("main", device, number=runs, repeat=3)
        floor = float(np.median(floor_timer(*floor_args).results))
        return max(seconds - floor, 0.0)
    except Exception as err:  # a vendor call that does not run is simply not a candidate
        logger.info("vendor call %s not timed: %s", call.func, err)
        return None
