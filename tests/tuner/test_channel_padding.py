"""Convs with 58 output channels are padded to 64 for whole vector registers, and the model
computes what ONNX Runtime computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.s_tir.meta_schedule.arg_info import ArgInfo

from tunefarm.tuner.channel_padding import padded_channels
from tunefarm.tuner.cpu_schedule_rules import CpuShape, cpu_default_schedules
from tunefarm.tuner.model_analysis import analyse_model
from tunefarm.tuner.targets import parse_target


def shufflenet_like(path: Path) -> Path:
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "shufflenet_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 14, 14])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 58, 14, 14])],
        [weight("w1", 58, 16, 3, 3), weight("b1", 58), weight("w2", 58, 58, 1, 1)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_padded_channels_only_where_it_pays() -> None:
    assert padded_channels(58, 16) == 64
    assert padded_channels(116, 16) == 128
    assert padded_channels(232, 16) == 240
    assert padded_channels(64, 16) is None  # whole registers already
    assert padded_channels(24, 16) is None  # a third more work: not worth it
    assert padded_channels(3, 16) is None


def test_padded_convs_compute_the_model_and_vectorize_whole_registers(tmp_path: Path) -> None:
    model = shufflenet_like(tmp_path / "model.onnx")
    target = parse_target("llvm")
    analysed = analyse_model(model, target=target, layout="auto", fp16=False, max_bytes=1 << 30)
    script = analysed.pipeline.mod.script()
    assert "strided_slice" in script
    convs = [task for task in analysed.tasks if "conv2d" in task.name]
    assert len(convs) == 2
    lanes = CpuShape.of(target).lanes("float32")
    for task in convs:
        assert "T.int64(64)" in task.mod.script(), task.name  # the padded channels
        made = cpu_default_schedules(task.mod, target)
        assert made and made[0].rule.startswith("anchor-"), task.name
        widths = [f"T.vectorized(T.int64({lanes * k}))" for k in (1, 2, 4)]
        scheduled = made[0].schedule.mod
        assert any(width in scheduled.script() for width in widths), task.name
        # The epilogue writes only the model's 58 channels, and the same values.
        inputs = [
            np.random.default_rng(2).uniform(-1, 1, info.as_json()[2]).astype("float32")
            for info in ArgInfo.from_entry_func(task.mod)
        ]
        results = []
        for mod in (task.mod, scheduled):
            args = [tvm.runtime.tensor(array.copy()) for array in inputs]
            tvm.tirx.build(mod, target=target)(*args)
            results.append(args[-1].numpy())
        np.testing.assert_allclose(results[1], results[0], rtol=1e-4, atol=1e-4)

    image = np.random.default_rng(1).standard_normal((1, 16, 14, 14)).astype(np.float32)
    executable = tvm.compile(analysed.pipeline.mod, target=target)
    ours = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(image)).numpy()
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": image})
    assert ours.shape == (1, 58, 14, 14)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
