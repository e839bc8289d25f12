"""Small TIR workloads and schedules to fill a tuning database in tests."""

from __future__ import annotations

import tvm
from tvm import te
from tvm.ir import IRModule
from tvm.s_tir import Schedule
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.database import TuningRecord, Workload
from tvm.target import Target


def matmul(n: int = 32, *, names: tuple[str, str, str] = ("A", "B", "C")) -> IRModule:
    a = te.placeholder((n, n), name=names[0])
    b = te.placeholder((n, n), name=names[1])
    k = te.reduce_axis((0, n), name="k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name=names[2])
    func = te.create_prim_func([a, b, c]).with_attr("global_symbol", "main")
    return IRModule({"main": func})


def split_trace(mod: IRModule, factor: int) -> tvm.s_tir.Trace:
    """A distinct schedule per factor: split the first loop of the matmul block."""
    sch = Schedule(mod)
    block = sch.get_child_blocks(sch.get_sblock("root"))[0]
    loop = sch.get_loops(block)[0]
    sch.split(loop, [None, factor])
    return sch.trace


def record(
    mod: IRModule, workload: Workload, target: Target, *, factor: int, run_secs: list[float]
) -> TuningRecord:
    return TuningRecord(
        split_trace(mod, factor),
        workload,
        run_secs,
        target,
        ArgInfo.from_prim_func(mod["main"]),
    )


def conv2d(
    *,
    batch: int = 1,
    channels: int = 16,
    size: int = 32,
    filters: int = 32,
    kernel: int = 3,
    stride: int = 1,
    relu: bool = False,
) -> IRModule:
    """An NCHW conv2d as TOPI writes it (blocks ``pad_temp``, ``conv2d_nchw``), maybe + relu."""
    from tvm import topi

    data = te.placeholder((batch, channels, size, size), name="data")
    weight = te.placeholder((filters, channels, kernel, kernel), name="weight")
    out = topi.nn.conv2d_nchw(data, weight, stride, kernel // 2, 1)
    if relu:
        out = topi.nn.relu(out)
    func = te.create_prim_func([data, weight, out]).with_attr("global_symbol", "main")
    return IRModule({"main": func})


def dense(m: int = 1, n: int = 64, k: int = 128) -> IRModule:
    """TOPI's dense (block ``T_matmul_NT``)."""
    from tvm import topi

    a = te.placeholder((m, k), name="a")
    b = te.placeholder((n, k), name="b")
    func = te.create_prim_func([a, b, topi.nn.dense(a, b)]).with_attr("global_symbol", "main")
    return IRModule({"main": func})


def first_loop_split(mod: IRModule, factor: int) -> tvm.s_tir.Trace:
    """A distinct schedule per factor of any workload: split the first loop of its first block."""
    sch = Schedule(mod)
    block = sch.get_child_blocks(sch.get_sblock("root"))[0]
    sch.split(sch.get_loops(block)[0], [None, factor])
    return sch.trace


def any_record(
    mod: IRModule, workload: Workload, target: Target, *, factor: int, run_secs: list[float]
) -> TuningRecord:
    return TuningRecord(
        first_loop_split(mod, factor),
        workload,
        run_secs,
        target,
        ArgInfo.from_prim_func(mod["main"]),
    )
