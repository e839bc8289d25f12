from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import tvm
import tvm_ffi
from tvm.ir import IRModule

import tunefarm.tuner.pipelines
from tunefarm.tuner.model_validation import validate_onnx_model
from tunefarm.tuner.onnx_import import import_onnx
from tunefarm.tuner.pipelines import PipelineOptions, run_pipeline
from tunefarm.tuner.targets import parse_target
from tunefarm.tuner.tasks import extract_tuning_tasks


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


def _two_alike_convs(tmp_path: Path) -> IRModule:
    """Two convs with weights of one shape: their layout and fp16 casts fold alike."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), name)
        for name in ("w1", "w2")
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1]),
        ],
        "two_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "two_convs.onnx"
    onnx.save(model, str(path))
    return import_onnx(validate_onnx_model(path))


def test_constant_folding_builds_each_function_once_with_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = _two_alike_convs(tmp_path)
    target = parse_target("cuda -arch=sm_90")
    options = PipelineOptions(fp16=True)
    build = tvm.get_global_func("tirx.build")
    builds: list[object] = []

    def counted_build(*args: object) -> object:
        builds.append(args[0])
        return build(*args)

    tvm.register_global_func("tirx.build", counted_build, override=True)
    registered = tvm.get_global_func("tirx.build")
    try:
        cached = run_pipeline(mod, target=target, options=options)
        assert tvm.get_global_func("tirx.build").same_as(registered)  # put back as it was
        cached_builds = list(builds)
        builds.clear()
        # TVM's own FoldConstant builds every folded call anew.
        monkeypatch.setattr(
            tunefarm.tuner.pipelines, "_constant_builds_cached", contextlib.nullcontext
        )
        uncached = run_pipeline(mod, target=target, options=options)
    finally:
        tvm.register_global_func("tirx.build", build, override=True)
    assert tvm_ffi.structural_equal(cached.mod, uncached.mod)
    distinct = [
        f
        for i, f in enumerate(builds)
        if not any(tvm_ffi.structural_equal(f, g) for g in builds[:i])
    ]
    assert len(cached_builds) == len(distinct) < len(builds)


def test_unknown_pipeline(relax_mod) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyError, match="unknown pipeline"):
        run_pipeline(relax_mod, target=parse_target("llvm"), options=PipelineOptions(), name="x")


def test_fp16_on_a_graph_that_tvm_cannot_convert_is_a_clear_user_error(tmp_path: Path) -> None:
    # TVM 0.27 imports a Clip as a call that its ToMixedPrecision pass cannot type ("Expected
    # TensorType, but got R.Callable"). A Clip with constant bounds (MobileNetV2's ReLU6) is
    # imported our way (tests/tuner/test_clip_rewrites.py); one with a computed bound is not.
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tunefarm.tuner.errors import UserInputError

    initializers = [
        numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w"),
        numpy_helper.from_array(np.array(0, np.float32), "low"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("ReduceMax", ["x"], ["high"], keepdims=0),
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
