"""Validate an ONNX model before anything else touches it.

A model is accepted when it parses, passes ``onnx.checker``, keeps all external data inside its
own folder, uses a known opset of the default domain, and has static input shapes (tuning needs
concrete shapes). Every rejection is a ``ModelValidationError`` with one line that says why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from tunefarm.tuner.errors import ModelValidationError
from tunefarm.tuner.tensor_budget import check_tensor_sizes

DEFAULT_MAX_MODEL_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class TensorSignature:
    name: str
    shape: list[int]
    dtype: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "shape": self.shape, "dtype": self.dtype}


@dataclass(frozen=True)
class ValidatedModel:
    path: Path
    model: onnx.ModelProto | None
    """The ONNX model; None for a PyTorch program (``exported``)."""
    opset: int
    inputs: list[TensorSignature]
    outputs: list[TensorSignature]
    exported: Any = None
    """A ``torch.export`` program (``tuner/torch_import.py``), for a ``.pt2`` file."""

    def onnx(self) -> onnx.ModelProto:
        """The ONNX model; a user error for a PyTorch program where only ONNX will do."""
        if self.model is None:
            raise ModelValidationError(f"{self.path}: this needs an ONNX model, not a .pt2 program")
        return self.model


def validate_onnx_model(
    path: Path, *, max_bytes: int = DEFAULT_MAX_MODEL_BYTES, max_tensor_bytes: int | None = None
) -> ValidatedModel:
    """Load and check ``path``; raise ``ModelValidationError`` with the reason if it is bad.

    ``max_tensor_bytes`` bounds every node's output (``tuner/tensor_budget.py``); by default
    the settings' ``max_tensor_bytes``."""
    path = Path(path)
    if path.is_dir():
        raise ModelValidationError(f"{path}: a folder, not a model file")
    if not path.is_file():
        raise ModelValidationError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise ModelValidationError(f"{path}: the file is empty")
    if size > max_bytes:
        raise ModelValidationError(f"{path}: {size} bytes is over the limit of {max_bytes} bytes")
    try:
        # The binary format whatever the suffix: onnx.load reads a .json file as ONNX's JSON
        # form, and its parse errors are of another kind.
        model = onnx.load(str(path), format="protobuf", load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as err:
        raise ModelValidationError(
            f"{path}: not an ONNX model, or a truncated one ({_first_line(err)})"
        ) from err
    if not model.HasField("graph") or not model.graph.node:
        raise ModelValidationError(f"{path}: not an ONNX model, or a truncated one (no graph)")
    _check_external_data(path, model)
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as err:
        raise ModelValidationError(
            f"{path}: cannot read external data ({_first_line(err)})"
        ) from err
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ModelValidationError(f"{path}: onnx.checker rejects it: {_first_line(err)}") from err
    opset = _default_opset(path, model)
    inputs = _graph_inputs(path, model)
    if max_tensor_bytes is None:
        from tunefarm.tuner.settings import Settings

        max_tensor_bytes = Settings().max_tensor_bytes
    check_tensor_sizes(path, model, max_bytes=max_tensor_bytes)
    outputs = [_signature(path, value, static_required=False) for value in model.graph.output]
    return ValidatedModel(path=path, model=model, opset=opset, inputs=inputs, outputs=outputs)


def _check_external_data(path: Path, model: onnx.ModelProto) -> None:
    base = path.parent.resolve()
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = external_data_helper.ExternalDataInfo(tensor)
        location = info.location
        resolved = (base / location).resolve()
        if os.path.isabs(location) or not resolved.is_relative_to(base):
            raise ModelValidationError(
                f"{path}: tensor {tensor.name!r} points its external data outside the model's "
                f"folder ({location!r})"
            )
        if not resolved.is_file():
            raise ModelValidationError(
                f"{path}: tensor {tensor.name!r} needs external data {location!r}, which is missing"
            )


def _default_opset(path: Path, model: onnx.ModelProto) -> int:
    newest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            if not 1 <= opset.version <= newest:
                raise ModelValidationError(
                    f"{path}: opset {opset.version} is unknown (this onnx knows 1 to {newest})"
                )
            return int(opset.version)
    raise ModelValidationError(f"{path}: the model imports no opset of the default ONNX domain")


def _graph_inputs(path: Path, model: onnx.ModelProto) -> list[TensorSignature]:
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [
        _signature(path, value, static_required=True)
        for value in model.graph.input
        if value.name not in initializers
    ]


def _signature(path: Path, value: onnx.ValueInfoProto, *, static_required: bool) -> TensorSignature:
    tensor_type = value.type.tensor_type
    shape: list[int] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif static_required:
            symbol = dim.dim_param or "?"
            raise ModelValidationError(
                f"{path}: input {value.name!r} has a dynamic dimension {symbol!r}; tuning needs "
                "static shapes, so export the model with fixed input shapes"
            )
        else:
            shape.append(-1)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    return TensorSignature(name=value.name, shape=shape, dtype=dtype)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
