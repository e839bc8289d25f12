"""The default CPU schedules: every task gets one, it is parallel and vectorized, and it
computes what the unscheduled function computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.schedule import Schedule
from tvm.tirx import build as tvm_build

from tunefarm.tuner.cpu_schedule_rules import (
    RULE_ANNOTATION,
    TUNED,
    TVM_DEFAULT,
    cpu_default_schedules,
    schedule_origin,
)
from tunefarm.tuner.model_analysis import analyse_model
from tunefarm.tuner.targets import parse_target
from tunefarm.tuner.tasks import TuningTask

RNG = np.random.default_rng(0)


def _weight(name: str, *shape: int) -> TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.1).astype(np.float32), name)


def _save(tmp_path: Path, name: str, nodes: list, inputs: list, outputs: list, inits: list) -> Path:  # type: ignore[type-arg]
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _image(name: str, channels: int, size: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, channels, size, size])


def cnn_ops(tmp_path: Path) -> Path:
    """3x3 conv + bias + ReLU, a depthwise conv, a 1x1 conv with a residual add, max pooling,
    global average pooling and a dense layer: the CNN operators of issue 15."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd"], ["d1"], pads=[1, 1, 1, 1], group=32),
        helper.make_node("Conv", ["d1", "w2"], ["c2"]),
        helper.make_node("Add", ["c2", "r1"], ["s"]),
        helper.make_node("MaxPool", ["s"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    inits = [
        _weight("w1", 32, 3, 3, 3),
        _weight("b1", 32),
        _weight("wd", 32, 1, 3, 3),
        _weight("w2", 32, 32, 1, 1),
        _weight("wf", 16, 32),
        _weight("bf", 16),
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])
    return _save(tmp_path, "cnn_ops", nodes, [_image("x", 3, 16)], [out], inits)


def attention_ops(tmp_path: Path) -> Path:
    """Matmuls, softmax over the last axis, a transpose and layer norm (BERT's operators)."""
    tokens, hidden = 16, 32
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "xt"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["attn"], axis=-1),
        helper.make_node("MatMul", ["attn", "x"], ["ctx"]),
        helper.make_node("LayerNormalization", ["ctx", "gamma", "beta"], ["y"], axis=-1),
    ]
    inits = [
        _weight("wq", hidden, hidden),
        numpy_helper.from_array(np.ones(hidden, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "beta"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, tokens, hidden])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, tokens, hidden])
    return _save(tmp_path, "attention_ops", nodes, [x], [y], inits)


def prime_conv(tmp_path: Path) -> Path:
    """A 37x37 output: no divisor near the register tile's rows, so the split leaves a
    shorter last tile (SqueezeNet's first conv is 109x109)."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 37, 37])
    return _save(
        tmp_path, "prime_conv", nodes, [_image("x", 3, 37)], [out], [_weight("w", 32, 3, 3, 3)]
    )


@pytest.fixture(scope="module")
def target() -> tvm.target.Target:
    return parse_target("llvm")


def _tasks(path: Path, target: tvm.target.Target) -> list[TuningTask]:
    return analyse_model(path, target=target, layout="auto", fp16=False, max_bytes=1 << 30).tasks


def _run(mod: tvm.IRModule, target: tvm.target.Target, inputs: list[np.ndarray]) -> np.ndarray:
    library = tvm_build(mod, target=target)
    device = tvm.cpu()
    args = [tvm.runtime.tensor(array, device) for array in inputs]
    library(*args)
    return args[-1].numpy()  # type: ignore[no-any-return]


def _random_arguments(mod: tvm.IRModule) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = []
    for info in ArgInfo.from_entry_func(mod):
        _, dtype, shape = info.as_json()
        arrays.append(rng.uniform(-1, 1, size=shape).astype(dtype))
    return arrays


@pytest.mark.parametrize("model", [cnn_ops, attention_ops, prime_conv])
def test_every_task_gets_a_default_schedule_that_computes_the_same(
    model, tmp_path: Path, target: tvm.target.Target
) -> None:  # type: ignore[no-untyped-def]
    tasks = _tasks(model(tmp_path), target)
    assert tasks
    for task in tasks:
        made = cpu_default_schedules(task.mod, target)
        assert made, f"no default schedule for {task.name}"
        inputs = _random_arguments(task.mod)
        expected = _run(task.mod, target, [array.copy() for array in inputs])
        for default in made:
            got = _run(default.schedule.mod, target, [array.copy() for array in inputs])
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=default.rule)
            assert schedule_origin(default.schedule.trace) == default.rule
            assert RULE_ANNOTATION in default.schedule.mod.script()


def test_conv_and_matmul_tasks_are_parallel_register_tiled_and_vectorized(
    tmp_path: Path, target: tvm.target.Target
) -> None:
    tasks = _tasks(cnn_ops(tmp_path), target) + _tasks(attention_ops(tmp_path), target)
    anchors = [task for task in tasks if "conv2d" in task.name or "matmul" in task.name]
    # the 3x3 conv, the depthwise conv, the 1x1 conv, the dense layer and three matmuls
    assert len(anchors) >= 6, [task.name for task in tasks]
    for task in anchors:
        made = cpu_default_schedules(task.mod, target)
        first = made[0]
        assert first.rule.startswith("anchor-"), (task.name, first.rule)
        script = first.schedule.mod.script()
        assert "T.parallel(" in script, task.name
        assert "T.vectorized(" in script, task.name
        assert 'scope="local"' in script, task.name  # accumulators in registers


def test_the_naive_conv_is_neither_parallel_nor_vectorized(
    tmp_path: Path, target: tvm.target.Target
) -> None:
    # What the default schedules are for: TVM 0.27's CPU lowering of the same task.
    conv = next(task for task in _tasks(cnn_ops(tmp_path), target) if "conv2d" in task.name)
    script = conv.mod.script()
    assert "T.parallel(" not in script and "T.vectorized(" not in script


def test_a_gpu_target_gets_no_cpu_schedule(tmp_path: Path, target: tvm.target.Target) -> None:
    conv = next(task for task in _tasks(cnn_ops(tmp_path), target) if "conv2d" in task.name)
    assert cpu_default_schedules(conv.mod, parse_target("cuda -arch=sm_90")) == []


def test_schedule_origin_tells_defaults_from_tuned_and_tvm_default(
    tmp_path: Path, target: tvm.target.Target
) -> None:
    conv = next(task for task in _tasks(cnn_ops(tmp_path), target) if "conv2d" in task.name)
    assert schedule_origin(Schedule(conv.mod).trace) == TVM_DEFAULT
    tuned = Schedule(conv.mod)
    block = tuned.get_child_blocks(tuned.get_sblock("root"))[-1]
    tuned.parallel(tuned.get_loops(block)[0])
    assert schedule_origin(tuned.trace) == TUNED
