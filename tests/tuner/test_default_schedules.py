"""Default schedules in a real compile: measured with 0 trials, selected by measured time, and
tuned on where the time is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy import create_engine, func, select

from tunefarm.tuner.compile_job import CompileOptions, compile_model
from tunefarm.tuner.job_spec import JobSpec
from tunefarm.tuning_db.schema import TuningRecordRow, WorkloadRow


def one_heavy_conv(path: Path) -> Path:
    """A small stem conv, one heavy 3x3 conv (most of the model's time), pooling and a dense
    layer."""
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "one_heavy_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [
            weight("w1", 16, 3, 3, 3),
            weight("w2", 64, 16, 3, 3),
            weight("b2", 64),
            weight("wf", 10, 64),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _compile(model: Path, out: Path, db_url: str, trials: int) -> dict:  # type: ignore[type-arg]
    options = CompileOptions(
        model_path=model,
        spec=JobSpec.of("llvm", trials, seed=3, baseline=False),
        out_dir=out,
        database_url=db_url,
    )
    return compile_model(options).manifest


def _best_per_workload(db_url: str) -> dict[str, float]:
    engine = create_engine(db_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(WorkloadRow.key, func.min(TuningRecordRow.mean_run_sec))
            .join(TuningRecordRow, TuningRecordRow.workload_id == WorkloadRow.id)
            .group_by(WorkloadRow.key)
        ).all()
    engine.dispose()
    return {key: float(best) for key, best in rows if best is not None}


def _record_count(db_url: str) -> int:
    engine = create_engine(db_url)
    with engine.connect() as connection:
        count = int(
            connection.execute(select(func.count()).select_from(TuningRecordRow)).scalar_one()
        )
    engine.dispose()
    return count


@pytest.mark.slow
def test_zero_trials_then_tune_more_where_the_time_is(tmp_path: Path) -> None:
    model = one_heavy_conv(tmp_path / "model.onnx")
    db_url = f"sqlite:///{tmp_path / 'tuning.db'}"

    # 0 trials: every task is built with a measured default schedule, and the library agrees
    # with ONNX Runtime.
    zero = _compile(model, tmp_path / "zero", db_url, trials=0)
    assert zero["tuning"]["trials_run"] == 0
    assert zero["tuning"]["default_schedules"]["measured"] >= len(zero["tasks"])
    assert zero["check_vs_onnxruntime"]["max_abs_diff"] < 1e-3
    for task in zero["tasks"]:
        assert task["source"] == "default schedule", task
        assert task["best_latency_us"] is not None
        variants = task["default_schedules"]
        # Selection by measured time: the build's record is the fastest variant.
        assert task["best_latency_us"] == pytest.approx(min(v for v in variants.values() if v))
        assert variants[task["schedule"]] == task["best_latency_us"]
    convs = [task for task in zero["tasks"] if "conv2d" in task["name"]]
    assert convs and all(task["schedule"].startswith("anchor-") for task in convs)
    records_before = _record_count(db_url)

    # Tune more: the model is fully covered, and --trials 24 still runs 24 new trials, most of
    # them on the heavy conv; no task gets slower.
    more = _compile(model, tmp_path / "more", db_url, trials=24)
    assert more["coverage_before_tuning"]["tasks_percent"] == 100
    assert more["tuning"]["trials_run"] == 24
    assert more["tuning"]["default_schedules"]["measured"] == 0  # measured once, filed, reused
    # Every trial is a new record (failures too): nothing was measured twice.
    assert _record_count(db_url) - records_before == 24
    times = {t["name"]: t["weight"] * t["best_latency_us"] for t in zero["tasks"]}
    heaviest = max(times, key=lambda name: times[name])
    trials = {task["name"]: task["trials"] for task in more["tasks"]}
    assert trials[heaviest] >= 16, (heaviest, trials)
    before = {task["name"]: task["best_latency_us"] for task in zero["tasks"]}
    best_in_database = _best_per_workload(db_url)
    for task in more["tasks"]:
        assert task["best_latency_us"] <= before[task["name"]], task
        # The build takes the fastest record the database holds, tuned or default.
        assert task["best_latency_us"] == pytest.approx(
            best_in_database[task["workload_key"]] * 1e6, abs=1e-3
        )
