"""Per chain, tuned or vendor (issue 17): the chain is found as its task in the database.

Records are filed for every task of the model compiled without vendor kernels, each with a
given run time; the vendor timer is a stand-in (the real one needs a GPU). If a chain did not
lower to the task the whole model has, its record would not be found and the chain would go to
the vendor whatever the times say.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy
import tvm
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.database import TuningRecord
from tvm.s_tir.schedule import Schedule

from tunefarm.tuner import vendor_choice, vendor_kernels
from tunefarm.tuner.model_validation import validate_onnx_model
from tunefarm.tuner.onnx_import import import_onnx
from tunefarm.tuner.pipelines import PipelineOptions, default_phases, run_pipeline
from tunefarm.tuner.sample_models import write_sample
from tunefarm.tuner.targets import parse_target
from tunefarm.tuner.tasks import extract_tuning_tasks
from tunefarm.tuning_db import SqlDatabase
from tunefarm.tuning_db.schema import VendorTimingRow

CUDA = parse_target('{"kind": "cuda", "arch": "sm_90"}')


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tvm.ir.IRModule:
    path = write_sample("small-resnet", tmp_path_factory.mktemp("m") / "small_resnet.onnx")
    return import_onnx(validate_onnx_model(path))


def _file_every_task(
    model: tvm.ir.IRModule, url: str, run_sec: float, *, another_schedule: bool = False
) -> int:
    """A record of ``run_sec`` for every task of the model built without vendor kernels
    (``another_schedule``: of a trace the first records do not have)."""
    database = SqlDatabase(url, target=CUDA)
    tasks = extract_tuning_tasks(
        run_pipeline(model, target=CUDA, options=PipelineOptions(fp16=True)).mod, target=CUDA
    )
    for task in tasks:
        schedule = Schedule(task.mod)
        if another_schedule:
            schedule.enter_postproc()  # one more instruction: another trace, the same program
        database.commit_tuning_record(
            TuningRecord(
                schedule.trace,
                database.commit_workload(task.mod),
                [run_sec],
                CUDA,
                ArgInfo.from_entry_func(task.mod),
            )
        )
    return len(tasks)


def _chains(model: tvm.ir.IRModule) -> dict[tvm.relax.Var, vendor_kernels.VendorCall]:
    calls: dict[tvm.relax.Var, vendor_kernels.VendorCall] = {}

    def keep_all(found: dict[tvm.relax.Var, vendor_kernels.VendorCall]) -> set[tvm.relax.Var]:
        calls.update(found)
        return set(found)

    mod = model
    with CUDA, tvm.transform.PassContext(opt_level=3):
        for phase in default_phases(CUDA, PipelineOptions(fp16=True)):
            if phase.name == "legalize":
                break
            mod = tvm.transform.Sequential(phase.passes)(mod)
    vendor_kernels.offload_to_vendor_kernels(mod, select=keep_all)
    return calls


@pytest.mark.parametrize(
    ("record_us", "vendor_us", "vendor_chains"),
    [
        (1.0, 10.0, 0),  # every chain's tuned kernel is faster
        (10.0, 1.0, 7),  # the vendor call is faster everywhere
        (None, 10.0, 7),  # nothing tuned: the vendor call, since it runs
        (1.0, None, 0),  # the vendor call does not run here
    ],
)
def test_each_chain_goes_where_it_is_faster(
    model: tvm.ir.IRModule,
    tmp_path: Path,
    record_us: float | None,
    vendor_us: float | None,
    vendor_chains: int,
) -> None:
    url = f"sqlite:///{tmp_path / 'tuning.db'}"
    if record_us is not None:
        assert _file_every_task(model, url, record_us * 1e-6) > 0
    chosen, choices = vendor_choice.choose(
        _chains(model),
        target=CUDA,
        database=SqlDatabase(url, target=CUDA),
        time_vendor=lambda call: vendor_us * 1e-6 if vendor_us is not None else None,
    )
    assert len(choices) == 7
    assert len(chosen) == vendor_chains
    assert sum(choice.vendor for choice in choices) == vendor_chains
    if record_us is not None:
        assert all(choice.tuned_us == record_us for choice in choices), choices
    assert all(choice.task for choice in choices)


def test_the_manifest_choices_come_from_the_selector(
    model: tvm.ir.IRModule, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'tuning.db'}"
    _file_every_task(model, url, 1e-6)
    into: list[vendor_choice.ChainChoice] = []
    select = vendor_choice.selector(
        target=CUDA, database_url=url, into=into, time_vendor=lambda call: 1e-7
    )
    result = run_pipeline(
        model,
        target=CUDA,
        options=PipelineOptions(fp16=True, vendor_kernels=True, vendor_select=select),
    )
    assert len(into) == 7 and all(choice.vendor for choice in into)
    assert sum(vendor_kernels.vendor_calls(result.mod).values()) == 7


def test_each_side_is_timed_once_per_chain_and_then_read_from_the_database(
    model: tvm.ir.IRModule, tmp_path: Path
) -> None:
    """A second build of the model times nothing; a better record re-times the tuned side
    only. The timers are stand-ins for the GPU (they count their calls)."""
    url = f"sqlite:///{tmp_path / 'tuning.db'}"
    _file_every_task(model, url, 5e-6)
    timed: list[str] = []

    def timer(side: str, seconds: float) -> Callable[..., float]:
        def time(*_: object) -> float:
            timed.append(side)
            return seconds

        return time

    def build() -> list[vendor_choice.ChainChoice]:
        _, choices = vendor_choice.choose(
            _chains(model),
            target=CUDA,
            database=SqlDatabase(url, target=CUDA),
            time_vendor=timer("vendor", 3e-6),
            time_tuned=timer("tuned", 4e-6),
        )
        return choices

    first = build()
    distinct = len(timed) // 2
    assert distinct > 0 and timed.count("vendor") == timed.count("tuned") == distinct
    assert all(not choice.from_database for choice in first)
    # The keys fit the column (64 characters), which PostgreSQL enforces and SQLite does not.
    with SqlDatabase(url, target=CUDA).engine.connect() as connection:
        keys = connection.execute(sqlalchemy.select(VendorTimingRow.source_key)).scalars().all()
    assert len(keys) == 2 * distinct and all(len(key) == 64 for key in keys)

    timed.clear()
    second = build()
    assert timed == []
    assert [c.as_dict() | {"from_database": []} for c in second] == [c.as_dict() for c in first]
    assert all(choice.from_database == ("tuned", "vendor") for choice in second)

    # Tuning went on: every task has a better record.
    _file_every_task(model, url, 2e-6, another_schedule=True)
    third = build()
    assert timed == ["tuned"] * distinct
    assert all(choice.from_database == ("vendor",) for choice in third)


def _captured_calls(mod: tvm.ir.IRModule) -> str:
    """The script of the functions ``RewriteCUDAGraph`` lifted out to capture, once lowered as
    a CUDA build lowers them."""
    from tvm.relax.backend.cuda import pipeline

    passes = (
        pipeline.legalize_passes(CUDA)
        + pipeline.dataflow_lower_passes(CUDA)
        + pipeline.finalize_passes(CUDA)[:2]  # StaticPlanBlockMemory, RewriteCUDAGraph
    )
    with (
        CUDA,
        tvm.transform.PassContext(opt_level=3, config={"relax.backend.use_cuda_graph": True}),
    ):
        lowered = tvm.transform.Sequential(passes)(mod)
    return "\n".join(
        func.script() for gv, func in lowered.functions.items() if gv.name_hint.endswith("_capture")
    )


def test_both_sides_of_a_chain_are_timed_inside_one_cuda_graph(model: tvm.ir.IRModule) -> None:
    """Outside a graph, the vendor side would be timed by its host work (H100, 2026-12-06: 10 to
    150 µs a cuDNN call, against 4 to 8 µs of GPU time in the model's graph)."""
    call = next(call for call in _chains(model).values() if call.func == "tunefarm_cudnn_conv2d")
    vendor = _captured_calls(vendor_choice.chain_module(call, vendor=True, timed=True))
    # Every repeat is in the graph: one call's GPU work outlasts its host work.
    assert vendor.count('"tunefarm_cudnn_conv2d"') == vendor_choice.TIMED_REPEATS
    tuned = _captured_calls(vendor_choice._lowered(call, CUDA, timed=True))
    assert tuned.count("fused_conv2d_add_relu(") == vendor_choice.TIMED_REPEATS
    # Untimed, the chain writes the function's own output, which a graph never captures.
    assert _captured_calls(vendor_choice.chain_module(call, vendor=True)) == ""
