"""A residual add, its layer norm and the fp16 copy after it as one kernel of ours (issue 17).

With ``--fp16``, ``ToMixedPrecision`` keeps a transformer's residual stream and layer norms in
fp32, so each sublayer ends in ``layer_norm(float(x16) + residual)`` and the next projection
reads ``half(that)``: three TVM kernels (the cast and add, the layer norm, the cast back), six a
BERT layer. This pass replaces each such chain with one ``call_dps_packed`` to
``tunefarm_add_layer_norm_half`` (or ``tunefarm_add_layer_norm`` where nothing reads an fp16
copy), ``vendor_layer_norm.cu``: the fp32 result stays the residual stream, the fp16 copy is
what the cast gave.

Taken: a layer norm over the last axis with scale and shift, of rows of at most
``MAX_COLS`` fp32 values, whose input is read by nothing else and is the sum of two tensors of
its shape, one of them an fp16 or fp32 tensor through reshapes and casts read by nothing else.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass

import tvm
from tvm import relax
from tvm.ir import IRModule

from tunefarm.tuner.binding_chains import (
    BindingGraph,
    ChainValue,
    dtype_of,
    op_name,
    replace_chains,
    static_shape,
)

logger = logging.getLogger(__name__)

LAYER_NORM_FUNC = "tunefarm_add_layer_norm"
LAYER_NORM_HALF_FUNC = "tunefarm_add_layer_norm_half"
MAX_COLS = 2048  # vendor_layer_norm.cu: 256 threads x 8 values


@dataclass(frozen=True)
class LayerNormCall:
    x: relax.Expr
    residual: relax.Expr
    gamma: relax.Expr
    beta: relax.Expr
    epsilon_bits: int
    out: relax.Var
    """The layer norm's binding: it becomes the call's fp32 result."""
    half: relax.Var | None
    """The fp16 cast of the result the next projection reads, if there is one."""


def fuse_add_layer_norm(mod: IRModule) -> tuple[IRModule, int]:
    """``mod`` with each such chain of ``main`` replaced; how many."""
    calls = find_add_layer_norm(mod["main"])
    if not calls:
        return mod, 0
    chains: dict[relax.Var, ChainValue] = {}
    for call in calls:
        result, copy = _call_values(call)
        chains[call.out] = result
        if call.half is not None:
            chains[call.half] = copy
    return replace_chains(mod, chains), len(calls)


def fused_layer_norm_pass() -> tvm.transform.Pass:
    """``fuse_add_layer_norm`` as a module pass, for the vendor-kernels phase."""

    def transform(mod: IRModule, _context: tvm.transform.PassContext) -> IRModule:
        mod, count = fuse_add_layer_norm(mod)
        logger.info("fused add + layer norm: %d calls", count)
        return mod

    return tvm.transform.module_pass(transform, opt_level=0, name="FuseAddLayerNorm")


def find_add_layer_norm(function: relax.Function) -> list[LayerNormCall]:
    graph = BindingGraph.of(function)
    found = []
    for var, value in graph.values.items():
        if op_name(value) == "relax.nn.layer_norm":
            call = _match(graph, var, value)  # type: ignore[arg-type]
            if call is not None:
                found.append(call)
    return found


def _call_values(call: LayerNormCall) -> tuple[ChainValue, ChainValue]:
    """The new values of the layer norm's binding and of its fp16 cast's: one call, emitted at
    the first, and its two results."""
    emitted: list[relax.Var] = []

    def result(
        builder: relax.BlockBuilder, visit: Callable[[relax.Expr], relax.Expr]
    ) -> relax.Expr:
        args = relax.Tuple(
            [
                visit(call.x),
                visit(call.residual),
                visit(call.gamma),
                visit(call.beta),
                relax.ShapeExpr([call.epsilon_bits]),
            ]
        )
        if call.half is None:
            return relax.call_dps_packed(LAYER_NORM_FUNC, args, out_ty=call.out.ty)
        both = relax.call_dps_packed(LAYER_NORM_HALF_FUNC, args, out_ty=[call.out.ty, call.half.ty])
        emitted.append(builder.emit(both))
        return relax.TupleGetItem(emitted[0], 0)

    def copy(
        _builder: relax.BlockBuilder, _visit: Callable[[relax.Expr], relax.Expr]
    ) -> relax.Expr:
        return relax.TupleGetItem(emitted[0], 1)

    return result, copy


def _match(graph: BindingGraph, var: relax.Var, value: relax.Call) -> LayerNormCall | None:
    shape = static_shape(value)
    if shape is None or not shape or dtype_of(value) != "float32":
        return None
    attrs = value.attrs
    axes = [int(a) for a in attrs.axes]
    if axes not in ([-1], [len(shape) - 1]) or not (attrs.center and attrs.scale):
        return None
    cols = shape[-1]
    data, gamma, beta = value.args
    if cols > MAX_COLS or any(
        static_shape(p) != (cols,) or dtype_of(p) != "float32" for p in (gamma, beta)
    ):
        return None
    if not isinstance(data, relax.Var) or graph.uses[data] != 1:
        return None
    total = graph.values.get(data)
    if op_name(total) != "relax.add":
        return None
    assert isinstance(total, relax.Call)
    left, right = total.args
    if static_shape(left) != shape or static_shape(right) != shape:
        return None
    if dtype_of(left) != "float32" or dtype_of(right) != "float32":
        return None
    # x: the operand that is a cast of a tensor only this add reads (the projection's output).
    sides = [
        (x, residual)
        for x_side, residual in ((left, right), (right, left))
        if (x := _cast_source(graph, x_side)) is not None
    ]
    if not sides:
        return None
    x, residual = sides[0]
    epsilon = struct.unpack("<I", struct.pack("<f", float(attrs.epsilon)))[0]
    return LayerNormCall(x, residual, gamma, beta, epsilon, var, _half_copy(graph, var))


def _cast_source(graph: BindingGraph, expr: relax.Expr) -> relax.Expr | None:
    """The fp16 or fp32 tensor ``expr`` is a reshape and cast chain of, each step read by
    nothing else; None where it is no such chain or no cast is in it."""
    cast = False
    while isinstance(expr, relax.Var) and graph.uses[expr] == 1 and expr in graph.values:
        value = graph.values[expr]
        op = op_name(value)
        if op == "relax.astype":
            cast = True
        elif op != "relax.reshape":
            break
        expr = value.args[0]  # type: ignore[attr-defined]
    if not cast or dtype_of(expr) not in ("float16", "float32"):
        return None
    return expr


def _half_copy(graph: BindingGraph, var: relax.Var) -> relax.Var | None:
    """The fp16 cast of ``var`` (through reshapes read by nothing else) that a reader of ``var``
    makes, if one does."""
    for reader in graph.readers.get(var, []):
        current = reader
        while op_name(graph.values[current]) == "relax.reshape":
            following = graph.sole_reader(current)
            if following is None:
                break
            current = following
        value = graph.values[current]
        if op_name(value) == "relax.astype" and dtype_of(value) == "float16":
            source = value.args[0]  # type: ignore[attr-defined]
            if source.same_as(var) or graph.uses[source] == 1:
                return current
    return None
