"""Per chain, the faster of the tuned kernel and the vendor call (issue 17).

cuDNN's legacy API runs some convolutions on its Hopper kernels and others on a CUDA-core
fallback several times slower than a tuned TVM kernel (``bench/README.md``, "Vendor kernels").
So a chain goes to the vendor only where that is faster:

- the tuned side is the task the chain becomes once legalized and fused (the chain is rebuilt
  alone, lowered as the whole model would be, and looked up like any task); a chain with no
  record counts as not tuned;
- on a GPU (the default ``selector``), both sides are built alone, the tuned one with its record,
  and timed by one harness (``time_chain``), so whatever that harness adds, both pay. Timing the
  vendor call against the record's own figure chose wrongly on the H100 (2026-12-06: 749 µs of
  GPU time per ResNet-50 call chosen that way, 301 µs with every chain on the vendor): a record
  is one kernel timed by MetaSchedule's runner, the vendor call was a VM call with its host work.
- the harness runs the chain ``TIMED_REPEATS`` times in one CUDA graph per call. With one chain a
  call, every chain of under about 8 µs timed at the call's host floor (8.4 to 8.8 µs on the H100
  for the vendor and the tuned side alike, whether the record said 3.8 or 8 µs), so the choice
  among them was noise: MobileNetV2 with a pack (2026-12-07) sent 8 chains to TVM and the
  library got slower, and TVM's untuned kernels once "beat" the vendor on every chain.

A chain with no record goes to the vendor when the vendor call runs at all; with a record, only
when the vendor call is faster.

Each side's time is kept in the tuning database (``tuning_db.vendor_timings``) under the target
fingerprint, the chain, and what was built (the shim's sources; the task's best record), so the
next build for the fingerprint reads it instead of building and timing the chain again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.target import Target

from tunefarm.tuner.tasks import TuningTask, extract_tuning_tasks, look_up_tasks
from tunefarm.tuner.vendor_kernels import (
    VendorCall,
    VendorSelect,
    shim_sources_key,
    vendor_call_expr,
)
from tunefarm.tuning_db.vendor_timings import (
    VendorTimingKey,
    find_vendor_timing,
    store_vendor_timing,
)

logger = logging.getLogger(__name__)

TIMED_REPEATS = 16
"""Chains per timed call: enough GPU work (16 x 2 µs or more) to outlast the call's host work."""

HARNESS = f"graph-x{TIMED_REPEATS}"
"""Part of each stored timing's source: timings of another harness are not read back."""

VendorTimer = Callable[[VendorCall], float | None]
"""Seconds per call of the vendor call alone, or None where it does not run."""

TunedTimer = Callable[[VendorCall, Any], float | None]
"""Seconds per call of the chain built alone with its record from the database (the second
argument), or None where it does not run."""


@dataclass(frozen=True)
class ChainChoice:
    task: str
    """The task the chain is when TVM compiles it."""
    tuned_us: float | None
    vendor_us: float | None
    vendor: bool
    record_us: float | None = None
    """The record's own time, where ``tuned_us`` was measured beside the vendor call."""
    from_database: tuple[str, ...] = ()
    """The sides (``vendor``, ``tuned``) whose time an earlier build measured and stored."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "record_us": self.record_us,
            "tuned_us": self.tuned_us,
            "vendor_us": self.vendor_us,
            "chosen": "vendor" if self.vendor else "tuned",
            "from_database": list(self.from_database),
        }


def choose(
    calls: dict[relax.Var, VendorCall],
    *,
    target: Target,
    database: Any,
    time_vendor: VendorTimer,
    time_tuned: TunedTimer | None = None,
) -> tuple[set[relax.Var], list[ChainChoice]]:
    """The chains to hand to the vendor, and why, one ``ChainChoice`` per chain.

    Without ``time_tuned``, a chain's tuned side is its record's time."""
    chosen: set[relax.Var] = set()
    choices: list[ChainChoice] = []
    stored = _StoredTimings(database)
    shim = shim_sources_key()
    # ResNet repeats its blocks: one timing per distinct call.
    times: dict[str, tuple[float | None, float | None, tuple[str, ...]]] = {}
    for end, call in calls.items():
        task = _chain_task(call, target=target, database=database)
        record_sec = task.best_sec_before if task is not None else None
        chain = _chain_json(call)
        if chain not in times:
            read: list[str] = []
            tuned_at = record_sec
            if task is not None and record_sec is not None and time_tuned is not None:
                tuned_at = stored.time(
                    chain,
                    "tuned",
                    stored.tuned_source(task.mod, record_sec),
                    partial(time_tuned, call, database),
                    read,
                )
            vendor_at = stored.time(chain, "vendor", shim, partial(time_vendor, call), read)
            times[chain] = (tuned_at, vendor_at, tuple(read))
        tuned_sec, vendor_sec, read_sides = times[chain]
        if record_sec is not None and tuned_sec is None:
            tuned_sec = record_sec  # the tuned chain failed to build alone; its record stands
        vendor = vendor_sec is not None and (tuned_sec is None or vendor_sec < tuned_sec)
        if vendor:
            chosen.add(end)
        choices.append(
            ChainChoice(
                task=task.name if task is not None else "",
                tuned_us=round(tuned_sec * 1e6, 3) if tuned_sec is not None else None,
                vendor_us=round(vendor_sec * 1e6, 3) if vendor_sec is not None else None,
                vendor=vendor,
                record_us=round(record_sec * 1e6, 3) if record_sec is not None else None,
                from_database=read_sides,
            )
        )
    return chosen, choices


class _StoredTimings:
    """Each side's time in the tuning database: read where an earlier build stored it, else
    measured and stored (a side that does not run here is not stored: another machine's GPU
    may run it)."""

    def __init__(self, database: Any) -> None:
        # Only our SQL database keeps timings; another MetaSchedule database times every build.
        self._database = database if hasattr(database, "target_fingerprint") else None

    def tuned_source(self, task: IRModule, record_sec: float) -> str:
        """The tuned side's ``source_key``: the task's workload and its best record's time."""
        if self._database is None:
            return ""
        workload = self._database.workload_key(task)  # cached: the lookup computed it
        return hashlib.sha256(f"{workload}:{record_sec!r}".encode()).hexdigest()

    def time(
        self,
        chain: str,
        side: str,
        source: str,
        measure: Callable[[], float | None],
        read: list[str],
    ) -> float | None:
        if self._database is None:
            return measure()
        # The harness is part of what was measured; hashed, the key keeps its 64 characters.
        harnessed = hashlib.sha256(f"{HARNESS}:{source}".encode()).hexdigest()
        key = VendorTimingKey(self._database.target_fingerprint.key, chain, side, harnessed)
        seconds = find_vendor_timing(self._database.engine, key)
        if seconds is not None:
            read.append(side)
            return seconds
        seconds = measure()
        if seconds is not None:
            store_vendor_timing(self._database.engine, key, seconds, measured_on=_this_machine())
        return seconds


def _this_machine() -> str:
    """The host, and the GPU where there is one: what a stored timing was measured on."""
    host, device = socket.gethostname(), tvm.cuda(0)
    return f"{host} ({device.device_name})" if device.exist else host


def selector(
    *,
    target: Target,
    database_url: str,
    into: list[ChainChoice],
    time_vendor: VendorTimer | None = None,
    time_tuned: TunedTimer | None = None,
) -> VendorSelect:
    """A ``VendorSelect`` for the pipeline that chooses by ``choose`` and leaves its reasons
    in ``into`` (the manifest's ``pipeline.vendor_choices``). Without timers, both sides are
    timed on this machine's GPU by ``time_chain``; with ``time_vendor`` alone, the vendor call
    is weighed against the record."""

    def select(calls: dict[relax.Var, VendorCall]) -> set[relax.Var]:
        from tunefarm.tuning_db import SqlDatabase

        kept, made = choose(
            calls,
            target=target,
            database=SqlDatabase(database_url, target=target),
            time_vendor=time_vendor or (lambda call: time_chain(call, target=target)),
            time_tuned=time_tuned
            if time_vendor is not None
            else (lambda call, db: time_chain(call, target=target, database=db)),
        )
        into[:] = made  # a pipeline run again (another layout) chooses again
        return kept

    return select


def chain_module(call: VendorCall, *, vendor: bool = False, timed: bool = False) -> IRModule:
    """The chain alone as a Relax module: its inputs are its free variables. ``vendor``: the
    vendor call instead of the chain's ops.

    ``timed``: as ``time_chain`` runs it, ``TIMED_REPEATS`` times over in one CUDA graph like
    the model's. Its inputs count as weights (``num_input`` 0), which is what lets
    ``RewriteCUDAGraph`` capture the chains; one element of each chain's result is copied out
    after the dataflow block (kept, the chains are not dead code; outside the block, the copy
    does not fuse into the chain's kernel), and the copies are joined into the function's
    output, which a graph never captures. Without the graph, the vendor side is timed by its
    host work: 10 to 150 µs per cuDNN call on the H100 against 4 to 8 µs of GPU time."""
    builder = relax.BlockBuilder()
    params = {var: relax.Var(f"in{i}", var.ty) for i, var in enumerate(_inputs(call))}
    with builder.function("main", list(params.values())):
        with builder.dataflow():
            outs = [
                builder.emit_output(_chain(builder, call, params, vendor=vendor))
                for _ in range(TIMED_REPEATS if timed else 1)
            ]
        if timed:
            rank = len(call.out_ty.shape.values)
            corners = [
                builder.emit(
                    relax.op.strided_slice(
                        out, axes=list(range(rank)), begin=[0] * rank, end=[1] * rank
                    )
                )
                for out in outs
            ]
            builder.emit_func_output(builder.emit(relax.op.concat(corners, axis=0)))
        else:
            builder.emit_func_output(outs[0])
    mod = builder.get()
    if timed:
        mod["main"] = mod["main"].with_attr("num_input", 0)
    return mod


def _chain(
    builder: relax.BlockBuilder,
    call: VendorCall,
    params: dict[relax.Var, relax.Var],
    *,
    vendor: bool,
) -> relax.Var:
    """One copy of the chain (or its vendor call) on ``params``; its last binding."""
    if vendor:
        residual = params[call.residual] if call.residual is not None else None
        return builder.emit(vendor_call_expr(call, params[call.x], residual, out_ty=call.out_ty))
    remap: dict[relax.Var, relax.Expr] = dict(params)
    last: relax.Var | None = None
    for var, value in (*call.bindings, *call.fused_tail):
        args = [remap.get(arg, arg) for arg in value.args]
        last = builder.emit(relax.Call(value.op, args, value.attrs))
        remap[var] = last
    assert last is not None, "a chain has at least its convolution or matmul"
    return last


def _inputs(call: VendorCall) -> list[relax.Var]:
    """The chain's free variables: its data, and the residual it adds where it has one."""
    return [call.x] + ([call.residual] if call.residual is not None else [])


def _lowered(call: VendorCall, target: Target, *, timed: bool = False) -> IRModule:
    """The chain alone, legalized and fused as the whole model would be: its task is the one
    the model has."""
    mod = chain_module(call, timed=timed)
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
    return mod


def _chain_task(call: VendorCall, *, target: Target, database: Any) -> TuningTask | None:
    """The chain's task, with its best record's time (``best_sec_before``) looked up."""
    tasks = extract_tuning_tasks(_lowered(call, target), target=target)
    if not tasks:
        return None
    heaviest = tasks[0]  # the convolution or matmul, with its epilogue fused in
    look_up_tasks([heaviest], database=database, target=target)
    return heaviest


def _chain_json(call: VendorCall) -> str:
    """What the vendor call computes and on what: equal for ResNet's repeated blocks."""
    return json.dumps(
        {
            "func": call.func,
            "x": str(call.x.ty),
            "weight": str(call.weight.ty),
            "out": str(call.out_ty),
            "config": list(call.config),
        },
        sort_keys=True,
    )


def time_chain(
    call: VendorCall, *, target: Target, database: Any = None, runs: int = 25
) -> float | None:
    """Median seconds per chain on this machine's GPU of the chain alone: built with its record
    from ``database``, or, without one, as the vendor call. One module (``chain_module``,
    ``timed``: ``TIMED_REPEATS`` chains a call, ``runs`` calls a measurement), one CUDA graph,
    one timer either way. None if it fails to build or run (then it is not a candidate)."""
    from tunefarm.tuner.build import compile_tuned, compile_untuned
    from tunefarm.tuner.vendor_kernels import register_in_process

    try:
        if database is not None:
            mod = _lowered(call, target, timed=True)
            executable = compile_tuned(mod, target=target, database=database, cuda_graph=True)
        else:
            register_in_process()
            mod = chain_module(call, vendor=True, timed=True)
            executable = compile_untuned(mod, target=target, cuda_graph=True)
        device = tvm.cuda(0)
        vm = relax.VirtualMachine(executable, device)
        rng = np.random.default_rng(0)
        args = [
            tvm.runtime.tensor(
                rng.standard_normal([int(d) for d in var.ty.shape.values]).astype(
                    str(var.ty.dtype)
                ),
                device=device,
            )
            for var in _inputs(call)
        ]
        vm["main"](*args)  # the vendor's first call picks its algorithm
        timer = vm.time_evaluator("main", device, number=runs, repeat=5)
        return float(np.median(timer(*args).results)) / TIMED_REPEATS
    except Exception as err:  # a side that does not run is simply not a candidate
        side = "tuned" if database is not None else "vendor"
        logger.info("%s side of %s not timed: %s", side, call.func, err)
        return None
