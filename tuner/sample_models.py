"""Small ONNX models built with onnx.helper, for the quick start, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_cnn(
    *, image_size: int = 32, channels: int = 8, classes: int = 10, seed: int = 0
) -> onnx.ModelProto:
    """Conv → Relu → MaxPool → Flatten → Gemm on a 1x3xSxS image."""
    rng = np.random.default_rng(seed)
    pooled = image_size // 2

    def weight(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [
        helper.make_node(
            "Conv", ["image", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], name="conv1"
        ),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu1"),
        helper.make_node(
            "MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"
        ),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten1"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, name="fc1"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, image_size, image_size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        [
            weight("conv_w", channels, 3, 3, 3),
            weight("conv_b", channels),
            weight("fc_w", classes, channels * pooled * pooled),
            weight("fc_b", classes),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime we support
    onnx.checker.check_model(model)
    return model


SAMPLES = {"tiny-cnn": tiny_cnn}


def write_sample(name: str, path: Path) -> Path:
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; known: {', '.join(SAMPLES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(SAMPLES[name](), str(path))
    return path
