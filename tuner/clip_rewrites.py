"""ONNX's ``Clip`` imported so that TVM's layout and precision passes go through it (issue 17).

TVM 0.27 imports ``Clip`` as two TE functions (``emit_te(topi.maximum)``, then
``topi.minimum``): ``call_tir`` calls that ``ToMixedPrecision`` cannot type, so ``--fp16``
failed on every model with a ReLU6 (MobileNetV2). The other spellings trip elsewhere:

- Relax's ``clip``: ``ConvertLayout`` does not know it, and wraps every one in two transposes
  that keep it out of the conv's kernel; ``ToMixedPrecision`` fails on its ``PrimValue`` bounds.
- ``maximum``/``minimum`` with rank-0 constants: ``ConvertLayout`` fails ("Invalid SLayout").

So while ``clip_converter()`` is active, a ``Clip`` with constant scalar bounds is imported as
``minimum(maximum(x, low), high)`` with the bounds as constants of x's rank (shape 1, 1, ...)
and dtype: elementwise ops with broadcast constants, which both passes handle as they handle a
bias. A ``Clip`` with computed bounds, or a NaN bound (ONNX reads it as none), keeps TVM's
conversion.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend


class ConstantBoundClip(onnx_frontend.Clip):  # type: ignore[misc]
    @classmethod
    def _impl_v13(cls, bb: Any, inputs: Any, attr: Any, params: Any) -> Any:
        bounds = [_scalar(inputs[position]) for position in (1, 2)]
        if any(bound is _COMPUTED for bound in bounds):
            return super()._impl_v13(bb, inputs, attr, params)
        data = inputs[0]
        rank = len(data.ty.shape)
        dtype = str(data.ty.dtype)
        low, high = bounds
        clamped = _clamped(data, low, high, rank=rank, dtype=dtype, emit=bb.emit)
        return bb.emit(clamped) if high is not None else clamped


_COMPUTED = object()


def _scalar(bound: Any) -> Any:
    """The bound's value, None for a missing bound, ``_COMPUTED`` to leave it to TVM."""
    if bound is None:
        return None
    if not isinstance(bound, tvm.ir.GenericConst):
        return _COMPUTED
    value = bound.value.numpy()
    if value.size != 1 or math.isnan(float(value.reshape(-1)[0])):
        return _COMPUTED
    return value.reshape(-1)[0]


def _clamped(
    data: relax.Expr, low: Any, high: Any, *, rank: int, dtype: str, emit: Any
) -> relax.Expr:
    """``minimum(maximum(data, low), high)`` with the bounds as constants of ``data``'s rank; a
    None bound is left out. The maximum is emitted; the minimum is left to the caller to bind."""
    if low is not None:
        data = emit(relax.op.maximum(data, _broadcast_constant(low, rank, dtype)))
    if high is not None:
        data = relax.op.minimum(data, _broadcast_constant(high, rank, dtype))
    return data


def _broadcast_constant(value: Any, rank: int, dtype: str) -> relax.Expr:
    return relax.const(np.full((1,) * rank, value, dtype=dtype))


@contextlib.contextmanager
def clip_converter() -> Iterator[None]:
    """While inside, TVM's ONNX importer converts ``Clip`` with ``ConstantBoundClip``."""
    original = onnx_frontend._get_convert_map

    def convert_map() -> dict[str, Any]:
        return {**original(), "Clip": ConstantBoundClip}

    onnx_frontend._get_convert_map = convert_map
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original


def clips_as_min_max(mod: tvm.IRModule) -> tvm.IRModule:
    """Relax ``clip`` calls with constant bounds rewritten as ``ConstantBoundClip`` imports them.

    TVM's PyTorch importer turns ReLU6 (``hardtanh``) into ``R.clip(x, T.float64(0),
    T.float64(6))``, whose ``PrimValue`` bounds ``ToMixedPrecision`` cannot take: ``--fp16``
    failed on MobileNetV2 through ``torch.export``.
    """

    @relax.expr_functor.mutator
    class _Rewriter(relax.PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = super().visit_call_(call)
            if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.clip"):
                return call
            data, *bounds = call.args
            values = [_prim_constant(bound) for bound in bounds]
            rank = int(getattr(data.ty, "ndim", -1))  # a tensor of known rank only
            if any(value is _COMPUTED for value in values) or rank < 0:
                return call
            low, high = values
            return _clamped(
                data, low, high, rank=rank, dtype=str(data.ty.dtype), emit=self.builder_.emit
            )

    rewriter = _Rewriter(mod)
    for name, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(name, rewriter.visit_expr(func))
    return relax.transform.Normalize()(rewriter.builder_.get())


def _prim_constant(bound: Any) -> Any:
    """A scalar bound's number (TVM 0.27 passes ``FloatImm``/``IntImm``); None for an infinite
    one; ``_COMPUTED`` for anything else."""
    if not isinstance(bound, (tvm.tirx.FloatImm, tvm.tirx.IntImm)):
        return _COMPUTED
    number = float(bound.value)
    if math.isnan(number):
        return _COMPUTED
    return None if math.isinf(number) else number
