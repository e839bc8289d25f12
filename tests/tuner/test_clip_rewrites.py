"""Clip through the layout and precision passes: MobileNetV2's ReLU6 under --fp16 (issue 17)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from tunefarm.tuner import build
from tunefarm.tuner.model_validation import validate_onnx_model
from tunefarm.tuner.onnx_import import import_onnx
from tunefarm.tuner.pipelines import PipelineOptions, run_pipeline
from tunefarm.tuner.targets import parse_target
from tunefarm.tuner.tasks import extract_tuning_tasks


def _relu6_cnn(path: Path, *, high: float = 6.0, computed_bound: bool = False) -> Path:
    """Conv -> Clip(0, high); then, with ``computed_bound``, a Clip whose upper bound is the
    input's ReduceMax."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype("float32"), "w"),
        numpy_helper.from_array(np.array(0.0, "float32"), "low"),
        numpy_helper.from_array(np.array(high, "float32"), "high"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["conv", "low", "high"], ["out" if not computed_bound else "r6"]),
    ]
    if computed_bound:
        nodes += [
            helper.make_node("ReduceMax", ["image"], ["peak"], keepdims=0),
            helper.make_node("Clip", ["r6", "", "peak"], ["out"]),
        ]
    graph = helper.make_graph(
        nodes,
        "relu6",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 16, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return path


def _ops(mod: tvm.ir.IRModule) -> str:
    return str(mod["main"])


def test_a_constant_bound_clip_imports_as_relax_clip(tmp_path: Path) -> None:
    mod = import_onnx(validate_onnx_model(_relu6_cnn(tmp_path / "m.onnx", computed_bound=True)))
    text = _ops(mod)
    assert "R.maximum(" in text and "R.minimum(" in text  # the constant-bound Clip
    # The computed-bound Clip keeps TVM's conversion (its TE minimum).
    assert text.count("R.call_tir(") >= 1


@pytest.mark.parametrize("target_text", ["llvm", "cuda -arch=sm_90"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_fp16_runs_the_layout_and_precision_passes(
    tmp_path: Path, target_text: str, layout: str
) -> None:
    validated = validate_onnx_model(_relu6_cnn(tmp_path / "m.onnx"))
    target = parse_target(target_text)
    result = run_pipeline(
        import_onnx(validated), target=target, options=PipelineOptions(fp16=True, layout=layout)
    )
    assert extract_tuning_tasks(result.mod, target=target)
    assert "float16" in str(result.mod)


@pytest.mark.parametrize("fp16", [False, True])
def test_the_library_matches_onnxruntime(tmp_path: Path, fp16: bool) -> None:
    path = _relu6_cnn(tmp_path / "m.onnx", high=1.5)  # a bound the activations cross
    validated = validate_onnx_model(path)
    target = parse_target("llvm")
    mod = run_pipeline(
        import_onnx(validated), target=target, options=PipelineOptions(fp16=fp16)
    ).mod
    vm = relax.VirtualMachine(build.compile_untuned(mod, target=target), tvm.cpu())
    image = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype("float32") * 0.8
    ours = vm["main"](tvm.runtime.tensor(image)).numpy().astype("float32")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"image": image})
    assert (expected == 1.5).any() and (expected == 0).any()  # both bounds were hit
    np.testing.assert_allclose(ours, expected, atol=2e-2 if fp16 else 1e-5)
