"""ONNX files that tunefarm must reject, each for one reason."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from tunefarm.tuner.sample_models import tiny_cnn


def not_onnx(folder: Path) -> Path:
    path = folder / "notes.onnx"
    path.write_text("this is not a model\n" * 10)
    return path


def truncated(folder: Path) -> Path:
    path = folder / "truncated.onnx"
    data = tiny_cnn().SerializeToString()
    path.write_bytes(data[: len(data) // 2])
    return path


def external_data_outside(folder: Path) -> Path:
    model = tiny_cnn()
    weight = next(t for t in model.graph.initializer if t.name == "fc_w")
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": "../../etc/passwd", "offset": "0", "length": "64"}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    path = folder / "escapes.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def unsupported_operator(folder: Path) -> Path:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu1"),
        helper.make_node("Einsum2000", ["r"], ["y"], name="mystery_node", domain="com.example"),
    ]
    graph = helper.make_graph(
        nodes,
        "unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    path = folder / "unsupported.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def unsupported_standard_operator(folder: Path) -> Path:
    """Celu: a standard ONNX operator that TVM 0.27's importer has no converter for."""
    node = helper.make_node("Celu", ["x"], ["y"], name="the_node", alpha=1.0)
    graph = helper.make_graph(
        [node],
        "std_unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "std_unsupported.onnx"
    onnx.save(model, str(path))
    return path


def dynamic_batch(folder: Path) -> Path:
    model = tiny_cnn()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    path = folder / "dynamic.onnx"
    onnx.save(model, str(path))
    return path


def allocation_bomb(folder: Path, *, how: str = "ConstantOfShape", elements: int = 2**30) -> Path:
    """A model of a few hundred bytes whose import would build a tensor of ``elements`` floats
    (issue 21: ``ConstantOfShape([2**30])`` grew the importing process to 23 GB).

    ``how``: "ConstantOfShape" from an initializer; "Expand" of a scalar to a shape that a
    ``Shape``/``Concat`` chain computes (only data propagation sees it); "Tile" of a small
    initializer."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    initializers = [one]
    if how == "ConstantOfShape":
        initializers.append(helper.make_tensor("shape", TensorProto.INT64, [1], [elements]))
        nodes = [
            helper.make_node(
                "ConstantOfShape",
                ["shape"],
                ["big"],
                name="bomb",
                value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]),
            )
        ]
    elif how == "Expand":
        # [1] from x's shape, then [elements]: Concat(Shape(x) * elements)
        initializers.append(helper.make_tensor("n", TensorProto.INT64, [1], [elements]))
        nodes = [
            helper.make_node("Shape", ["x"], ["x_shape"]),
            helper.make_node("Mul", ["x_shape", "n"], ["big_shape"]),
            helper.make_node("Expand", ["one", "big_shape"], ["big"], name="bomb"),
        ]
    elif how == "Tile":
        initializers.append(helper.make_tensor("repeats", TensorProto.INT64, [1], [elements]))
        nodes = [helper.make_node("Tile", ["one", "repeats"], ["big"], name="bomb")]
    else:
        raise ValueError(how)
    nodes += [
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("Add", ["x", "total"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / f"bomb_{how.lower()}.onnx"
    onnx.save(model, str(path))
    return path
