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
    return _checked(graph)


def small_resnet(
    *, batch: int = 1, image_size: int = 32, channels: int = 16, classes: int = 10, seed: int = 0
) -> onnx.ModelProto:
    """A ResNet-style CNN: a stem conv, two residual blocks (the second one strided, with a 1x1
    projection), global average pooling and a dense layer, on a ``batch``x3xSxS image.

    Its convolutions come in four shapes, so it has the operator kinds of a real CNN at a size
    that tunes in minutes on two cores. ``batch`` or ``image_size`` give siblings with the same
    operators and other shapes (``bench/reuse.py``)."""
    rng = np.random.default_rng(seed)
    wide = channels * 2
    initializers: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def conv(name: str, source: str, c_in: int, c_out: int, kernel: int, stride: int) -> str:
        scale = np.sqrt(2.0 / (c_in * kernel * kernel))
        weight = (rng.standard_normal((c_out, c_in, kernel, kernel)) * scale).astype(np.float32)
        bias = (rng.standard_normal(c_out) * 0.01).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"{name}_w"))
        initializers.append(numpy_helper.from_array(bias, f"{name}_b"))
        pad = kernel // 2
        nodes.append(
            helper.make_node(
                "Conv",
                [source, f"{name}_w", f"{name}_b"],
                [name],
                pads=[pad] * 4,
                strides=[stride, stride],
                name=name,
            )
        )
        return name

    def relu(source: str) -> str:
        nodes.append(helper.make_node("Relu", [source], [f"{source}_relu"]))
        return f"{source}_relu"

    def add(left: str, right: str, name: str) -> str:
        nodes.append(helper.make_node("Add", [left, right], [name]))
        return name

    stem = relu(conv("stem", "image", 3, channels, 3, 1))
    # Block 1: identity shortcut.
    body = relu(conv("b1c1", stem, channels, channels, 3, 1))
    block1 = relu(add(conv("b1c2", body, channels, channels, 3, 1), stem, "block1"))
    # Block 2: strided, with a 1x1 projection on the shortcut.
    body = relu(conv("b2c1", block1, channels, wide, 3, 2))
    shortcut = conv("b2proj", block1, channels, wide, 1, 2)
    block2 = relu(add(conv("b2c2", body, wide, wide, 3, 1), shortcut, "block2"))
    nodes.append(helper.make_node("GlobalAveragePool", [block2], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    fc_w = (rng.standard_normal((classes, wide)) * 0.1).astype(np.float32)
    initializers.append(numpy_helper.from_array(fc_w, "fc_w"))
    initializers.append(numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        "small_resnet",
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, [batch, 3, image_size, image_size]
            )
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        initializers,
    )
    return _checked(graph)


def conv_relu(*, channels: int, size: int, seed: int = 0) -> onnx.ModelProto:
    """One 3x3 convolution (``channels`` to ``channels``, padding 1) with bias and ReLU on a
    ``size``x``size`` image: a ResNet stage's convolution as one task."""
    rng = np.random.default_rng(seed)
    scale = np.sqrt(2.0 / (channels * 9))
    weights = [
        numpy_helper.from_array(
            (rng.standard_normal((channels, channels, 3, 3)) * scale).astype(np.float32), "w"
        ),
        numpy_helper.from_array((rng.standard_normal(channels) * 0.1).astype(np.float32), "b"),
    ]
    shape = [1, channels, size, size]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["y"]),
        ],
        "conv_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        weights,
    )
    return _checked(graph)


def dense(*, rows: int, inputs: int, outputs: int, seed: int = 0) -> onnx.ModelProto:
    """``x @ W + b`` with ``x`` of ``rows`` x ``inputs``: a transformer's projection at one
    sequence length as one task."""
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((inputs, outputs)) / np.sqrt(inputs)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["product"]),
            helper.make_node("Add", ["product", "b"], ["y"]),
        ],
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, outputs])],
        [
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.zeros(outputs, np.float32), "b"),
        ],
    )
    return _checked(graph)


def _checked(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime we support
    onnx.checker.check_model(model)
    return model


SAMPLES = {"tiny-cnn": tiny_cnn, "small-resnet": small_resnet}


def write_sample(name: str, path: Path) -> Path:
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; known: {', '.join(SAMPLES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(SAMPLES[name](), str(path))
    return path
