"""Tensor-core traces carry IndexMap objects; their records must survive the database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tvm
import tvm.s_tir.meta_schedule as ms
from tvm import te
from tvm.s_tir import Schedule

from tunefarm.tuner.tensor_intrinsics import load_tensor_intrinsics
from tunefarm.tuning_db import SqlDatabase
from tunefarm.tuning_db.record_json import record_as_json

H100 = tvm.target.Target(
    {
        "kind": "cuda",
        "arch": "sm_90",
        "max_threads_per_block": 1024,
        "max_shared_memory_per_block": 49152,
        "thread_warp_size": 32,
    }
)


@pytest.fixture(scope="module")
def tensor_core_schedule() -> tuple[tvm.IRModule, Schedule]:
    load_tensor_intrinsics(H100)
    a = te.placeholder((128, 128), "float16", name="A")
    b = te.placeholder((128, 128), "float16", name="B")
    k = te.reduce_axis((0, 128), "k")
    c = te.compute(
        (128, 128),
        lambda i, j: te.sum(a[i, k].astype("float32") * b[k, j].astype("float32"), axis=k),
        name="C",
    )
    mod = tvm.IRModule({"main": te.create_prim_func([a, b, c])})
    context = ms.TuneContext(
        mod=mod, target=H100, space_generator="post-order-apply", task_name="matmul_fp16"
    )
    spaces = context.space_generator.generate_design_space(mod)
    layout_spaces = [
        space
        for space in spaces
        if any(inst.kind.name == "TransformLayout" for inst in space.trace.insts)
    ]
    assert layout_spaces, "the tensor-core rules made no TransformLayout: nothing to test"
    return mod, layout_spaces[0]


def test_stock_as_json_fails_on_the_tensor_core_trace_and_ours_does_not(
    tensor_core_schedule: tuple[tvm.IRModule, Schedule],
) -> None:
    mod, schedule = tensor_core_schedule
    record = ms.database.TuningRecord(schedule.trace, ms.database.Workload(mod), [1e-5], H100, None)
    with pytest.raises(TypeError, match="IndexMap"):
        record.as_json()  # the TVM 0.27 bug this module works around
    # The IndexMap is written as tvm.ir.save_json text, as MetaSchedule's JSONDatabase does.
    assert "root_index" in json.dumps(record_as_json(record)[0])


def test_a_tensor_core_record_round_trips_through_the_database(
    tensor_core_schedule: tuple[tvm.IRModule, Schedule], tmp_path: Path
) -> None:
    mod, schedule = tensor_core_schedule
    database = SqlDatabase(f"sqlite:///{tmp_path / 'tuning.db'}", target=H100)
    workload = database.commit_workload(mod)
    database.commit_tuning_record(
        ms.database.TuningRecord(schedule.trace, workload, [2e-5], H100, None)
    )
    (best,) = database.get_top_k(workload, 1)
    replayed = Schedule(mod)
    best.trace.apply_to_schedule(replayed, remove_postproc=False)
    tvm.ir.assert_structural_equal(replayed.mod, schedule.mod)
