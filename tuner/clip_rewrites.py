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
        if low is not None:
            data = bb.emit(relax.op.maximum(data, _broadcast_constant(low, rank, dtype)))
        if high is not None:
            data = bb.emit(relax.op.minimum(data, _broadcast_constant(high, rank, dtype)))
        return data


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
