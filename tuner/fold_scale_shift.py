"""Batch norm folded into the convolution before it (issue 17).

``torch.export`` keeps batch norm as an op, which ``DecomposeOpsForInference`` turns into
``(x - mean) / std * gamma + beta`` with constant operands. The ONNX exporter folds it into
the convolution's weights and bias instead. Left unfolded, each of those four elementwise ops
stays after the convolution: TVM fuses them into its kernel, but a vendor call cannot take
them, so MobileNetV2 through ``torch.export`` ran 41 more kernels than through ONNX (109 vs 68
per call on the H100, ``bench/results/torch_path-h100-20261206T122845Z.json``).

This pass rewrites ``conv2d(x, W)`` followed by any chain of ``add``, ``subtract``,
``multiply`` and ``divide`` with constants that vary along the output channels only into
``conv2d(x, W * scale) + shift``: the form ONNX models arrive in, which the vendor phase and
the task database already know.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.ir import Constant, IRModule

from tunefarm.tuner.binding_chains import BindingGraph, replace_chains, static_shape

_STEPS = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide")


def fold_scale_shift(mod: IRModule) -> IRModule:
    """``mod`` with each convolution's per-channel scale and shift folded into it."""
    folds = _find_folds(mod["main"])
    return replace_chains(mod, {end: fold.value for end, fold in folds.items()})


def fold_scale_shift_pass() -> tvm.transform.Pass:
    def transform(mod: IRModule, _context: tvm.transform.PassContext) -> IRModule:
        return fold_scale_shift(mod)

    return tvm.transform.module_pass(transform, opt_level=0, name="FoldScaleShiftIntoConv")


class _Fold:
    """One convolution and the constant steps after it, as ``conv * scale + shift``."""

    def __init__(self, conv: relax.Call, channels: int, dtype: str) -> None:
        self.conv = conv
        self.scale = np.ones(channels, dtype="float64")
        self.shift = np.zeros(channels, dtype="float64")
        self.dtype = dtype

    def apply(self, op: str, vector: np.ndarray) -> None:
        if op == "relax.add":
            self.shift += vector
        elif op == "relax.subtract":
            self.shift -= vector
        elif op == "relax.multiply":
            self.scale *= vector
            self.shift *= vector
        else:
            self.scale /= vector
            self.shift /= vector

    def scaled_weight(self) -> relax.Constant:
        """The convolution's weight with each output channel multiplied by its scale."""
        weight = self.conv.args[1]
        assert isinstance(weight, Constant)
        values = weight.value.numpy()
        shape = [1] * values.ndim
        shape[str(self.conv.attrs.kernel_layout).index("O")] = -1
        return relax.const((values * self.scale.reshape(shape)).astype(values.dtype), self.dtype)

    def value(
        self, builder: relax.BlockBuilder, visit: Callable[[relax.Expr], relax.Expr]
    ) -> relax.Expr:
        """``conv(x, W * scale) + shift``, the scaled convolution emitted first."""
        conv = relax.Call(
            self.conv.op, [visit(self.conv.args[0]), self.scaled_weight()], self.conv.attrs
        )
        return relax.op.add(builder.emit(conv), self.shift_constant())

    def shift_constant(self) -> relax.Constant:
        """The shift, shaped to broadcast along the output's channel axis."""
        shape = [1] * 4
        shape[str(self.conv.attrs.out_layout).index("C")] = -1
        return relax.const(self.shift.reshape(shape).astype(self.dtype), self.dtype)


def _channel_vector(expr: relax.Expr, out_shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """A constant that, broadcast against the convolution's output, varies along ``axis`` only,
    as a vector of the output's channels."""
    if not isinstance(expr, Constant):
        return None
    values = expr.value.numpy()
    if values.ndim > len(out_shape):
        return None
    aligned = (1,) * (len(out_shape) - values.ndim) + values.shape
    for position, (dim, out_dim) in enumerate(zip(aligned, out_shape, strict=True)):
        if dim != 1 and (position != axis or dim != out_dim):
            return None
    return np.broadcast_to(values.reshape(aligned), _only(out_shape, axis)).reshape(-1)


def _only(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return tuple(dim if position == axis else 1 for position, dim in enumerate(shape))


def _find_folds(function: relax.Function) -> dict[relax.Var, _Fold]:
    """The last variable of each chain to fold, with the fold that computes it."""
    graph = BindingGraph.of(function)
    folds: dict[relax.Var, _Fold] = {}
    for var, value in graph.values.items():
        if not _foldable_conv(value):
            continue
        out_shape = static_shape(value)
        if out_shape is None or len(out_shape) != 4:
            continue
        axis = str(value.attrs.out_layout).index("C")
        fold = _Fold(value, out_shape[axis], str(value.ty.dtype))
        end = var
        while (user := graph.sole_reader(end)) is not None:
            step = graph.values[user]
            if not isinstance(step, relax.Call) or getattr(step.op, "name", None) not in _STEPS:
                break
            left, right = step.args
            op = str(step.op.name)
            commutes = op in ("relax.add", "relax.multiply")
            other = right if left.same_as(end) else left if commutes else None
            if other is None or static_shape(user) != out_shape:
                break
            vector = _channel_vector(other, out_shape, axis)
            if vector is None or (op == "relax.divide" and not np.all(vector != 0)):
                break
            fold.apply(op, vector.astype("float64"))
            end = user
        if end is not var:
            folds[end] = fold
    return folds


def _foldable_conv(value: Any) -> bool:
    if not isinstance(value, relax.Call) or getattr(value.op, "name", None) != "relax.nn.conv2d":
        return False
    weight = value.args[1]
    dtype = str(value.ty.dtype) if isinstance(value.ty, relax.TensorType) else ""
    return (
        isinstance(weight, Constant)
        and dtype in ("float16", "float32")
        and str(weight.ty.dtype) == dtype
    )
