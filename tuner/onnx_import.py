"""ONNX → Relax, with unsupported operators named before the importer trips on them."""

from __future__ import annotations

from tvm.ir import IRModule

from tunefarm.tuner.clip_rewrites import clip_converter
from tunefarm.tuner.errors import ModelValidationError, UnsupportedOperatorError
from tunefarm.tuner.model_validation import ValidatedModel

# Nodes the importer handles outside its converter table.
_HANDLED_DIRECTLY = {"If", "Constant"}


def check_supported_operators(validated: ValidatedModel) -> None:
    """Raise ``UnsupportedOperatorError`` naming the first node TVM's importer cannot convert."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    supported = set(_get_convert_map()) | _HANDLED_DIRECTLY
    for node in validated.onnx().graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in supported:
            domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
            raise UnsupportedOperatorError(
                f"{validated.path}: operator {domain}{node.op_type} (node {node.name or '?'!r}) "
                "is not supported by TVM's ONNX importer"
            )


def import_onnx(validated: ValidatedModel) -> IRModule:
    """Import a validated ONNX model into a Relax IRModule with its weights bound as constants."""
    from tvm.relax.frontend.onnx import from_onnx

    check_supported_operators(validated)
    shapes = {signature.name: signature.shape for signature in validated.inputs}
    dtypes = {signature.name: signature.dtype for signature in validated.inputs}
    try:
        with clip_converter():
            return from_onnx(
                validated.onnx(), shape_dict=shapes, dtype_dict=dtypes, opset=validated.opset
            )
    except Exception as err:
        text = str(err).strip()
        reason = text.splitlines()[-1] if text else type(err).__name__
        raise ModelValidationError(
            f"{validated.path}: TVM's ONNX importer failed: {reason}"
        ) from err
