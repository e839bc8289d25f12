"""One small CNN at any opset from 6 to the newest, written as exporters of that opset wrote it.

Conv → BatchNormalization → PRelu → AveragePool → Add → Relu → Flatten → Gemm → Softmax. The
weights depend only on the seed, so the model at one opset computes what it computes at
another: a library built from the opset-6 file can be checked against ONNX Runtime running the
opset-7 file, which it can load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OLDEST_OPSET = 6
NEWEST_OPSET = onnx.defs.onnx_opset_version()
INPUT_SHAPE = (1, 3, 8, 8)
CLASSES = 5


def small_cnn(opset: int, *, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    # Before opset 7, BatchNormalization said is_test, and Gemm and Add broadcast only on request.
    legacy = {"broadcast": 1} if opset < 7 else {}
    batch_norm = {"is_test": 1} if opset < 7 else {}
    initializers = [
        weight("conv_w", 4, 3, 3, 3),
        weight("conv_b", 4),
        weight("bn_scale", 4),
        weight("bn_bias", 4),
        weight("bn_mean", 4),
        numpy_helper.from_array(np.ones(4, np.float32), "bn_var"),
        weight("slope", 4, 1, 1),
        weight("shift", 4, 4, 4),
        weight("fc_w", CLASSES, 64),
        weight("fc_b", CLASSES),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization",
            ["conv", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
            ["bn"],
            **batch_norm,
        ),
        helper.make_node("PRelu", ["bn", "slope"], ["prelu"]),
        helper.make_node("AveragePool", ["prelu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Add", ["pool", "shift"], ["shifted"], **legacy),
        helper.make_node("Relu", ["shifted"], ["relu"]),
        helper.make_node("Flatten", ["relu"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, **legacy),
        helper.make_node("Softmax", ["logits"], ["y"]),
    ]
    for index, node in enumerate(nodes):
        node.name = f"{node.op_type.lower()}_{index}"
    opsets = [helper.make_opsetid("", opset)]
    ir_version = helper.find_min_ir_version_for(opsets)
    # Before IR version 4, every initializer had to be a graph input as well.
    weights_as_inputs = (
        [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers]
        if ir_version < 4
        else []
    )
    graph = helper.make_graph(
        nodes,
        f"small_cnn_opset{opset}",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, list(INPUT_SHAPE)),
            *weights_as_inputs,
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CLASSES])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)
    onnx.checker.check_model(model)
    return model


def write_small_cnn(folder: Path, opset: int) -> Path:
    path = folder / f"small_cnn_opset{opset}.onnx"
    onnx.save(small_cnn(opset), str(path))
    return path


def onnxruntime_refusal(model: onnx.ModelProto) -> str | None:
    """Why ONNX Runtime cannot load ``model`` (its error message), or None if it can."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    try:
        onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:
        return str(err)
    return None
