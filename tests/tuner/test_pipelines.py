from __future__ import annotations

from pathlib import Path

import pytest

from tuner.model_validation import validate_onnx_model
from tuner.onnx_import import import_onnx
from tuner.pipelines import PipelineOptions, run_pipeline
from tuner.targets import parse_target
from tuner.tasks import extract_tuning_tasks


@pytest.fixture(scope="module")
def relax_mod(tiny_cnn_path: Path):  # type: ignore[no-untyped-def]
    return import_onnx(validate_onnx_model(tiny_cnn_path))


def test_default_pipeline_fuses_conv_bias_relu(relax_mod) -> None:  # type: ignore[no-untyped-def]
    target = parse_target("llvm")
    result = run_pipeline(relax_mod, target=target, options=PipelineOptions(layout="NCHW"))
    assert result.layout == "NCHW"
    assert result.phases == ["inference-cleanup", "legalize", "fuse", "cleanup"]
    fused = {kernel.name: kernel.ops for kernel in result.fused}
    assert fused["fused_conv2d_add_relu"] == ["conv2d", "add", "relu"]
    tasks = extract_tuning_tasks(result.mod, target=target)
    assert tasks[0].name == "fused_conv2d_add_relu"  # heaviest first
    assert tasks[0].flops > 0


def test_auto_layout_is_nhwc_with_output_channels_innermost_on_cpus(relax_mod) -> None:  # type: ignore[no-untyped-def]
    target = parse_target("llvm")
    result = run_pipeline(relax_mod, target=target, options=PipelineOptions())
    assert result.layout == "NHWC"
    assert "layout-and-precision" in result.phases
    conv = next(t for t in extract_tuning_tasks(result.mod, target=target) if "conv2d" in t.name)
    script = conv.mod.script()
    assert 'T.sblock("conv2d_nhwc")' in script
    # HWIO weights: the output channel (the vector axis of the CPU schedules) is innermost.
    assert "param_0[v_ry, v_rx, v_rc, v_ff]" in script


def test_unknown_pipeline(relax_mod) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyError, match="unknown pipeline"):
        run_pipeline(relax_mod, target=parse_target("llvm"), options=PipelineOptions(), name="x")


def test_fp16_on_a_graph_that_tvm_cannot_convert_is_a_clear_user_error(tmp_path: Path) -> None:
    # MobileNetV2's ReLU6 is an ONNX Clip, which TVM 0.27 imports as a call that its
    # ToMixedPrecision pass cannot type ("Expected TensorType, but got R.Callable").
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tuner.errors import UserInputError

    initializers = [
        numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w"),
        numpy_helper.from_array(np.array(0, np.float32), "low"),
        numpy_helper.from_array(np.array(6, np.float32), "high"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Clip", ["conv", "low", "high"], ["y"]),
        ],
        "relu6",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "relu6.onnx"
    onnx.save(model, str(path))
    mod = import_onnx(validate_onnx_model(path))
    target = parse_target("llvm")

    assert run_pipeline(mod, target=target, options=PipelineOptions()).mod is not None
    with pytest.raises(UserInputError, match="--fp16 is not supported for this model") as error:
        run_pipeline(mod, target=target, options=PipelineOptions(fp16=True, layout="NCHW"))
    assert "without that option" in str(error.value)
    assert "Expected TensorType" in str(error.value)
