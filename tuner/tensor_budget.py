"""Refuse an ONNX model whose import would build a huge tensor, before TVM sees it (issue 21).

TVM's ONNX importer evaluates what it can at import time: a ``ConstantOfShape``, ``Expand``,
``Tile`` or ``Range`` with constant inputs becomes a constant of its full size. A model of a few
hundred bytes (``ConstantOfShape([2**30])`` then ``ReduceSum``) grew the importing process to
23 GB before the kernel killed it. ONNX's own shape inference (with data propagation, so shapes
computed from ``Shape``/``Concat`` chains count too) gives every node's output size without
building anything; a node whose output is larger than the limit is named and the model refused.
A shape inference that fails proves nothing either way, and the import's own limits
(``tuner/import_guard.py``) still hold.
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx
from onnx import helper

from tunefarm.tuner.errors import ModelValidationError


def check_tensor_sizes(path: Path, model: onnx.ModelProto, *, max_bytes: int) -> None:
    """Raise ``ModelValidationError`` naming the first node whose output is over ``max_bytes``."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # a model shape inference cannot read: the import's own limits hold
        return
    graph = inferred.graph
    types = {
        value.name: value.type
        for value in (*graph.value_info, *graph.output, *graph.input)
        if value.type.HasField("tensor_type")
    }
    for node in graph.node:
        for output in node.output:
            size = _tensor_bytes(types.get(output))
            if size is not None and size > max_bytes:
                raise ModelValidationError(
                    f"{path}: node {node.name or output!r} ({node.op_type}) would build a "
                    f"tensor of {_readable(size)}, over the limit of {_readable(max_bytes)} "
                    "(TUNEFARM_MAX_TENSOR_BYTES)"
                )


def _tensor_bytes(value_type: onnx.TypeProto | None) -> int | None:
    if value_type is None or not value_type.tensor_type.HasField("shape"):
        return None
    dims = value_type.tensor_type.shape.dim
    if not all(dim.HasField("dim_value") for dim in dims):
        return None  # a symbolic dimension: unknown until it runs
    elem_type = value_type.tensor_type.elem_type
    try:
        item = helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    except (KeyError, TypeError, ValueError):
        item = 1
    return math.prod(dim.dim_value for dim in dims) * item


def _readable(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
