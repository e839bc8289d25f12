"""Cold-cache timing (issue 16): one call per repeat after a flush, less the launch floor."""

from __future__ import annotations

import tvm
from tvm.s_tir.meta_schedule.arg_info import ArgInfo

from tests.tuning_db.workloads import matmul
from tunefarm.tuner import launch_floor
from tunefarm.tuner.targets import parse_target
from tunefarm.tuner.trial import (
    GPU_MEASURE,
    MIN_RUN_SEC,
    MeasureSettings,
    TrialRequest,
    measure_settings_for,
    run_trial,
)
from tunefarm.workers.measure_tasks import TrialRequestModel

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 1})


def _request(settings: MeasureSettings, n: int = 64) -> TrialRequest:
    mod = matmul(n)
    return TrialRequest(
        mod_json=tvm.ir.save_json(mod),
        target_json=str(TARGET),
        args_info=[info.as_json() for info in ArgInfo.from_prim_func(mod["main"])],
        settings=settings,
    )


def test_gpu_targets_are_timed_cold_and_cpus_warm() -> None:
    assert measure_settings_for(parse_target("cuda -arch=sm_90")) == GPU_MEASURE
    assert GPU_MEASURE.cold_cache and GPU_MEASURE.repeat > 1
    assert not measure_settings_for(parse_target("llvm")).cold_cache


def test_a_cold_repeat_is_one_call_after_a_flush_less_the_floor() -> None:
    launch_floor._floors.clear()
    result = run_trial(_request(MeasureSettings(repeat=7, cold_cache=True)))
    assert result.error is None
    assert result.run_secs is not None and len(result.run_secs) == 7
    assert all(MIN_RUN_SEC <= sec < 1 for sec in result.run_secs)
    # The floor was measured once, with the flush of this device, and is kept for the process.
    ((target_text, device, flush_bytes), floor) = launch_floor._floors.popitem()
    assert tvm.target.Target(target_text).kind.name == "llvm" and device == 0
    assert flush_bytes == 2 * launch_floor.DEFAULT_L2_BYTES  # a CPU reports no L2 size
    assert 0 < floor < 0.01


def test_a_bigger_kernel_reads_slower_than_a_smaller_one_when_cold() -> None:
    small = run_trial(_request(MeasureSettings(repeat=5, cold_cache=True), n=32))
    big = run_trial(_request(MeasureSettings(repeat=5, cold_cache=True), n=256))
    assert small.run_secs is not None and big.run_secs is not None
    # 512x more multiply-adds: the floor's subtraction must not erase the difference.
    assert min(big.run_secs) > max(small.run_secs)


def test_the_farm_wire_format_carries_cold_cache() -> None:
    wire = TrialRequestModel.model_validate(
        {
            "mod_json": "{}",
            "target_json": str(TARGET),
            "args_info": [],
            "settings": {"repeat": 30, "cold_cache": True},
        }
    )
    assert wire.to_request().settings == MeasureSettings(repeat=30, cold_cache=True)
