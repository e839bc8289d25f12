"""Pad a conv's output channels to a whole number of CPU vector registers.

The CPU default schedules vectorize a conv over its output channels. ShuffleNet V2 has 58 and
116 channels: the widest vector that divides them is 2 or 4 floats, and those convs ran at
10 GFLOP/s where a 16-float vector runs at 50-100. A conv whose weights are a constant gets
zero output channels up to the next multiple of the vector width, and a slice after it gives
the model back its own channels. The slice fuses into the conv's kernel as its epilogue.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.ir.expr import GenericConst

_CONV2D = tvm.ir.Op.get("relax.nn.conv2d")

MAX_PADDING = 0.125
"""Pad only when the extra channels cost at most this share of the conv's work."""


def padded_channels(channels: int, lanes: int) -> int | None:
    """The channel count to pad ``channels`` to, or None when padding would not pay."""
    if channels < lanes or channels % lanes == 0:
        return None
    padded = -(-channels // lanes) * lanes
    return padded if (padded - channels) / channels <= MAX_PADDING else None


def pad_output_channels(lanes: int) -> tvm.transform.Pass:
    """The pass: NHWC/HWIO convs with constant weights and ungrouped channels."""

    @tvm.transform.module_pass(opt_level=0, name="PadOutputChannels")
    def transform(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        mutator = _PadOutputChannels(mod, lanes)
        for global_var, function in mod.functions.items():
            if isinstance(function, relax.Function):
                mutator.builder_.update_func(global_var, mutator.visit_expr(function))
        return mutator.builder_.get()

    return transform


@relax.expr_functor.mutator
class _PadOutputChannels(relax.PyExprMutator):  # type: ignore[misc]
    def __init__(self, mod: IRModule, lanes: int) -> None:
        super().__init__(mod)
        self.lanes = lanes

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op != _CONV2D:
            return call
        attrs = call.attrs
        data, weight = call.args
        if (
            str(attrs.data_layout) != "NHWC"
            or str(attrs.kernel_layout) != "HWIO"
            or int(attrs.groups) != 1
            or not isinstance(weight, GenericConst)
        ):
            return call
        array = weight.value.numpy()
        channels = int(array.shape[3])
        padded = padded_channels(channels, self.lanes)
        if padded is None:
            return call
        zeros = np.zeros((*array.shape[:3], padded - channels), dtype=array.dtype)
        conv = self.builder_.emit(
            relax.op.nn.conv2d(
                data,
                relax.const(np.concatenate([array, zeros], axis=3)),
                strides=[int(x) for x in attrs.strides],
                padding=[int(x) for x in attrs.padding],
                dilation=[int(x) for x in attrs.dilation],
                groups=1,
                data_layout="NHWC",
                kernel_layout="HWIO",
                out_layout=str(attrs.out_layout) or "NHWC",
                out_dtype=_dtype_or_none(attrs.out_dtype) or str(array.dtype),
            )
        )
        return relax.op.strided_slice(conv, axes=[3], begin=[0], end=[channels])


def _dtype_or_none(dtype: object) -> str | None:
    text = str(dtype)
    return None if text in ("", "void", "None") else text
