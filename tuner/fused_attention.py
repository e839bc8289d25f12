"""Scaled dot-product attention as one kernel of ours, on CUDA targets (issue 17).

Imported transformers spell attention as a dozen Relax ops: the head split of Q, K and V
(reshape, permute), two batched matmuls, the scale, the mask add, the softmax with its casts,
and the head merge. TVM makes ~9 kernels of them per layer, each a launch of a few
microseconds on tensors that fit in one SM's shared memory (BERT-base: 9 of its 22 kernels a
layer). This pass finds each ``softmax(Q Kᵀ · scale + mask) V`` and replaces it with one
``call_dps_packed`` to ``tunefarm_attention`` (``vendor_attention.cu``), which reads Q, K and V
where the projections wrote them and writes the output where the next projection reads it.

How each transformers version spells the head split does not matter: every chain of views
between a projection and a matmul is replayed on ``np.arange`` labels, and the pass takes a
chain only where the labels show that the matmul reads the projection through plain strides
(``_affine``). The kernel takes fp16 Q, K, V and output, up to 256 keys and head sizes
that are multiples of 8; other attention stays TVM's.

Where Q, K and V are ``x @ W + b`` of one x with constant weights (self-attention), the three
projections become one GEMM three times as wide, and the call reads its output at three
offsets: one cuBLASLt launch a layer instead of three.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.ir import Constant, IRModule

from tunefarm.tuner.binding_chains import (
    BindingGraph,
    ChainValue,
    dtype_of,
    op_name,
    replace_chains,
    static_shape,
)

logger = logging.getLogger(__name__)

ATTENTION_FUNC = "tunefarm_attention"
MAX_KEYS = 256
SHARED_LIMIT_BYTES = 96 * 1024
"""The most shared memory a call may take: what sm_86 and sm_89 allow a block (sm_80: 163 KB)."""
_ROWS_PER_BLOCK = 16  # vendor_attention.cu's kRowsPerBlock

_VIEWS = (
    "relax.reshape",
    "relax.permute_dims",
    "relax.broadcast_to",
    "relax.expand_dims",
    "relax.squeeze",
)


@dataclass(frozen=True)
class View:
    """One view op of a chain: a permutation of axes, or a row-major reshape to ``shape``."""

    axes: tuple[int, ...] | None
    shape: tuple[int, ...]

    def apply(self, labels: np.ndarray) -> np.ndarray:
        if self.axes is not None:
            return labels.transpose(self.axes)
        return labels.reshape(self.shape)


@dataclass(frozen=True)
class AttentionCall:
    """One attention that becomes one call."""

    q: relax.Expr
    k: relax.Expr
    v: relax.Expr
    mask: relax.Expr | None
    config: tuple[int, ...]
    """b, h, s, sk, d; the strides (batch, head, row) of q, k, v and the output; the mask's
    (batch, head, row, key); the mask's bits (0: none); the scale's float32 bits; the offsets of
    q, k and v in their tensors."""
    out_ty: relax.Type
    """The type of the binding the call replaces."""
    merged: MergedProjection | None = None
    """Where Q, K and V are three projections of one input: the one projection that replaces
    them, whose output the call reads at three offsets (``q``, ``k``, ``v`` are unused)."""


@dataclass(frozen=True)
class MergedProjection:
    """``x @ weight + bias``, the Q, K and V projections' weights and biases side by side."""

    x: relax.Expr
    weight: Constant
    bias: Constant


def shared_bytes(keys: int, head_size: int) -> int:
    """The shared memory one block of the kernel takes (``SharedBytes`` of the .cu)."""
    pairs = head_size // 2
    return 4 * (_ROWS_PER_BLOCK * pairs * 2 + _ROWS_PER_BLOCK * keys + keys * (2 * pairs + 1))


def fuse_attention(mod: IRModule) -> tuple[IRModule, int]:
    """``mod`` with each attention of ``main`` the kernel takes replaced; how many."""
    calls = find_attention(mod["main"])
    if not calls:
        return mod, 0
    return replace_chains(mod, {end: _call_value(call) for end, call in calls.items()}), len(calls)


def fused_attention_pass() -> tvm.transform.Pass:
    """``fuse_attention`` as a module pass, for the vendor-kernels phase."""

    def transform(mod: IRModule, _context: tvm.transform.PassContext) -> IRModule:
        mod, count = fuse_attention(mod)
        logger.info("fused attention: %d calls", count)
        return mod

    return tvm.transform.module_pass(transform, opt_level=0, name="FuseAttention")


def find_attention(function: relax.Function) -> dict[relax.Var, AttentionCall]:
    """Each attention's last binding (the head merge's end), with the call that computes it."""
    graph = BindingGraph.of(function)
    found: dict[relax.Var, AttentionCall] = {}
    for var, value in graph.values.items():
        if op_name(value) == "relax.nn.softmax":
            match = _match(graph, var, value)  # type: ignore[arg-type]
            if match is not None:
                end, call = match
                found[end] = call
    return found


def _call_value(call: AttentionCall) -> ChainValue:
    def value(builder: relax.BlockBuilder, visit: Callable[[relax.Expr], relax.Expr]) -> relax.Expr:
        if call.merged is not None:
            merged = call.merged
            product = builder.emit(relax.op.matmul(visit(merged.x), merged.weight))
            q = k = v = builder.emit(relax.op.add(product, merged.bias))
        else:
            q, k, v = visit(call.q), visit(call.k), visit(call.v)
        mask = visit(call.mask) if call.mask is not None else q  # not read without a mask
        args = relax.Tuple([q, k, v, mask, relax.ShapeExpr(call.config)])
        return relax.call_dps_packed(ATTENTION_FUNC, args, out_ty=call.out_ty)

    return value


# ---------------------------------------------------------------------------------------------
# Matching


def _constant(graph: BindingGraph, expr: relax.Expr) -> float | None:
    """The one value of a scalar constant, or of a variable bound to a constant's cast."""
    while isinstance(expr, relax.Var) and op_name(graph.values.get(expr)) == "relax.astype":
        expr = graph.values[expr].args[0]  # type: ignore[union-attr]
    if not isinstance(expr, Constant):
        return None
    values = expr.value.numpy()
    if values.size != 1:
        return None
    return float(values.reshape(-1)[0])


def _view(value: relax.Expr) -> View | None:
    """``value`` as a view of its first argument, if it is one (a broadcast only if it adds
    nothing)."""
    op = op_name(value)
    if op not in _VIEWS:
        return None
    assert isinstance(value, relax.Call)
    shape = static_shape(value)
    source = static_shape(value.args[0])
    if shape is None or source is None or math.prod(shape) != math.prod(source):
        return None
    if op == "relax.permute_dims":
        axes = value.attrs.axes
        order = (
            tuple(int(a) for a in axes) if axes is not None else tuple(reversed(range(len(source))))
        )
        return View(order, shape)
    if op == "relax.broadcast_to" and shape != source:
        return None
    return View(None, shape)


def _views_back(
    graph: BindingGraph, expr: relax.Expr, *, scales: bool = False
) -> tuple[relax.Expr, list[View], float]:
    """The tensor ``expr`` is a chain of views of, the chain in order, and, with ``scales``, the
    product of the scalar constants the chain also multiplies by (``scaled_dot_product_attention``
    scales Q and Kᵀ by the square root of the scale each)."""
    views: list[View] = []
    factor = 1.0
    while isinstance(expr, relax.Var) and expr in graph.values:
        value = graph.values[expr]
        view = _view(value)
        if view is not None:
            views.insert(0, view)
            expr = value.args[0]  # type: ignore[attr-defined]
            continue
        if scales and op_name(value) == "relax.multiply":
            left, right = value.args  # type: ignore[attr-defined]
            constant = _constant(graph, right)
            if constant is None:
                constant, left = _constant(graph, left), right
            if constant is not None:
                factor *= constant
                expr = left
                continue
        break
    return expr, views, factor


def _affine(index: np.ndarray) -> tuple[int, tuple[int, ...]] | None:
    """(offset, strides) with ``index[i] == offset + sum(i_k * s_k)`` for every i, if there are
    such, with no negative stride."""
    if index.size == 0:
        return None
    offset = int(index.flat[0])
    strides = []
    expected = np.full(index.shape, offset, dtype=np.int64)
    for axis, size in enumerate(index.shape):
        unit = tuple(1 if k == axis and size > 1 else 0 for k in range(index.ndim))
        stride = int(index[unit]) - offset
        if stride < 0:
            return None
        strides.append(stride)
        along = [-1 if k == axis else 1 for k in range(index.ndim)]
        expected += np.arange(size, dtype=np.int64).reshape(along) * stride
    return (offset, tuple(strides)) if np.array_equal(index, expected) else None


@dataclass(frozen=True)
class Operand:
    """A matmul operand as views of the tensor it reads."""

    source: relax.Expr
    views: tuple[View, ...]
    logical: tuple[int, int, int, int]
    """(b, h, rows, d)."""
    key_major: bool
    """The operand is Kᵀ, laid out [..., d, rows]."""

    def layout(self, numbering: np.ndarray | None = None) -> tuple[int, ...] | None:
        """(offset, batch, head, row strides) of the operand's elements in ``numbering`` (each
        source element's position in the tensor the kernel reads; default: the source's own
        row-major order), where the head dimension's stride is 1."""
        if numbering is None:
            shape = static_shape(self.source)
            assert shape is not None
            numbering = np.arange(math.prod(shape)).reshape(shape)
        labels = numbering
        for view in self.views:
            labels = view.apply(labels)
        b, h, rows, d = self.logical
        if self.key_major:
            labels = labels.reshape(b, h, d, rows).transpose(0, 1, 3, 2)
        else:
            labels = labels.reshape(b, h, rows, d)
        found = _affine(labels)
        if found is None or (d > 1 and found[1][3] != 1):
            return None
        offset, strides = found
        return (offset, *strides[:3])


def _operand(
    graph: BindingGraph,
    operand: relax.Expr,
    logical: tuple[int, int, int, int],
    key_major: bool,
    *,
    scales: bool = False,
) -> tuple[Operand, float] | None:
    """The operand as views of a tensor, and the scale it carries (``_views_back``)."""
    source, views, factor = _views_back(graph, operand, scales=scales)
    if static_shape(source) is None or static_shape(operand) is None:
        return None
    if dtype_of(source) != "float16":
        return None
    return Operand(source, tuple(views), logical, key_major), factor


def _match(
    graph: BindingGraph, softmax: relax.Var, value: relax.Call
) -> tuple[relax.Var, AttentionCall] | None:
    shape = static_shape(value)
    if shape is None or len(shape) not in (3, 4):
        return None
    if int(value.attrs.axis) not in (-1, len(shape) - 1):
        return None
    *batch, s, sk = shape
    b, h = (1, batch[0]) if len(batch) == 1 else batch
    # scaled_dot_product_attention's decomposition sets rows whose scores are all -inf to 0
    # (softmax alone gives NaN there): a guard that reads the scores a second time.
    guarded = _all_masked_guard(graph, softmax, value.args[0])
    scores = _scores(graph, value.args[0], b * h * s * sk, extra_reads=int(guarded is not None))
    if scores is None:
        return None
    qk, scale, mask = scores
    # Forward: casts and views of the probabilities, then the matmul with V.
    probs = guarded if guarded is not None else softmax
    while True:
        reader = graph.sole_reader(probs)
        if reader is None:
            return None
        step = graph.values[reader]
        view = _view(step)
        if op_name(step) == "relax.astype" or (view is not None and view.axes is None):
            probs = reader
            continue
        break
    pv_value = graph.values[reader]
    if op_name(pv_value) != "relax.matmul" or not pv_value.args[0].same_as(probs):  # type: ignore[attr-defined]
        return None
    q3, kt3 = qk.args
    v3 = pv_value.args[1]  # type: ignore[attr-defined]
    q_shape = static_shape(q3)
    if q_shape is None or len(q_shape) < 2:
        return None
    d = q_shape[-1]
    if sk > MAX_KEYS or d % 8 != 0 or shared_bytes(sk, d) > SHARED_LIMIT_BYTES:
        return None
    if dtype_of(pv_value) != "float16":
        return None
    q_side = _operand(graph, q3, (b, h, s, d), key_major=False, scales=True)
    k_side = _operand(graph, kt3, (b, h, sk, d), key_major=True, scales=True)
    v_side = _operand(graph, v3, (b, h, sk, d), key_major=False)
    if q_side is None or k_side is None or v_side is None:
        return None
    (q_op, q_scale), (k_op, k_scale), (v_op, _) = q_side, k_side, v_side
    scale *= q_scale * k_scale
    operands = (q_op, k_op, v_op)
    merged, layouts = _merge_projections(graph, operands)
    if layouts is None:
        layouts = _layouts(operands, [None, None, None])
    if layouts is None:
        return None
    out = _output(graph, reader, (b, h, s, d))
    if out is None:
        return None
    end, out_strides = out
    mask_config = _mask_config(mask, (b, h, s, sk), len(shape))
    if mask_config is None:
        return None
    scale_bits = struct.unpack("<I", struct.pack("<f", scale))[0]
    config = (
        b,
        h,
        s,
        sk,
        d,
        *(stride for layout in layouts for stride in layout[1:]),
        *out_strides,
        *mask_config,
        scale_bits,
        *(layout[0] for layout in layouts),
    )
    config = tuple(int(c) for c in config)
    return end, AttentionCall(q_op.source, k_op.source, v_op.source, mask, config, end.ty, merged)


# Q is read 4 bytes at a time, K and V 16: every offset and stride a multiple of these elements.
_ALIGNMENT = (2, 8, 8)


def _layouts(
    operands: tuple[Operand, Operand, Operand], numberings: list[np.ndarray | None]
) -> tuple[tuple[int, ...], ...] | None:
    """Q's, K's and V's layouts in their numberings, where each is one the kernel can read."""
    layouts = []
    for operand, numbering, elements in zip(operands, numberings, _ALIGNMENT, strict=True):
        layout = operand.layout(numbering)
        if layout is None or any(x % elements for x in layout):
            return None
        layouts.append(layout)
    return tuple(layouts)


def _merge_projections(
    graph: BindingGraph, operands: tuple[Operand, Operand, Operand]
) -> tuple[MergedProjection | None, tuple[tuple[int, ...], ...] | None]:
    """One projection for Q, K and V where each is ``x @ W + b`` of the same x with constant
    weights, read by nothing but its view chain: one GEMM three times as wide instead of three
    launches. The merged projection and the three layouts in its output; Nones where they
    cannot merge."""
    parts = [_projection(graph, operand.source) for operand in operands]
    shapes = {static_shape(operand.source) for operand in operands}
    if len({id(operand.source) for operand in operands}) != 3 or len(shapes) != 1:
        return None, None
    found = [part for part in parts if part is not None]
    if len(found) != 3 or any(not x.same_as(found[0][0]) for x, _, _ in found):
        return None, None
    weights = [weight for _, weight, _ in found]
    if len({weight.shape[0] for weight in weights}) != 1:
        return None, None
    (shape,) = shapes
    assert shape is not None
    total = sum(weight.shape[1] for weight in weights)
    numbering = np.arange(math.prod(shape[:-1]) * total).reshape(*shape[:-1], total)
    starts = np.cumsum([0] + [weight.shape[1] for weight in weights])
    layouts = _layouts(operands, [numbering[..., starts[i] : starts[i + 1]] for i in range(3)])
    if layouts is None:
        return None, None
    dtype = str(weights[0].dtype)
    merged = MergedProjection(
        found[0][0],
        relax.const(np.concatenate(weights, axis=1), dtype),
        relax.const(np.concatenate([bias for _, _, bias in found]), dtype),
    )
    return merged, layouts


def _projection(
    graph: BindingGraph, source: relax.Expr
) -> tuple[relax.Expr, np.ndarray, np.ndarray] | None:
    """(x, W, b) where ``source`` is ``x @ W + b`` with a 2-D constant W and a constant b along
    its last axis, the product read by nothing else."""
    if not isinstance(source, relax.Var) or graph.uses[source] != 1:
        return None
    total = graph.values.get(source)
    if op_name(total) != "relax.add":
        return None
    left, right = total.args  # type: ignore[union-attr]
    product, bias = (left, right) if isinstance(right, Constant) else (right, left)
    if not isinstance(bias, Constant) or not isinstance(product, relax.Var):
        return None
    if graph.uses[product] != 1 or op_name(graph.values.get(product)) != "relax.matmul":
        return None
    x, weight = graph.values[product].args  # type: ignore[attr-defined]
    if not isinstance(weight, Constant) or len(weight.value.shape) != 2:
        return None
    width = int(weight.value.shape[1])
    values = bias.value.numpy()
    if (
        values.size != width
        or values.shape[-1] != width
        or values.dtype != weight.value.numpy().dtype
    ):
        return None
    out_dtype = graph.values[product].attrs.out_dtype
    if str(out_dtype) not in ("", "void", str(values.dtype)):
        return None
    return x, weight.value.numpy(), values.reshape(width)


def _scores(
    graph: BindingGraph, expr: relax.Expr, size: int, *, extra_reads: int = 0
) -> tuple[relax.Call, float, relax.Expr | None] | None:
    """Back from the softmax's input to ``Q Kᵀ``: the matmul, the scale applied after it, the
    mask added after the scale. None: the chain holds anything else, or is read elsewhere
    (the softmax's input ``extra_reads`` more times: by the guard the call replaces too)."""
    scale = 1.0
    mask: relax.Expr | None = None
    reads = 1 + extra_reads
    while True:
        if not isinstance(expr, relax.Var) or graph.uses[expr] != reads or expr not in graph.values:
            return None
        reads = 1
        value = graph.values[expr]
        out_shape = static_shape(value)
        if out_shape is None or math.prod(out_shape) != size:
            return None
        op = op_name(value)
        assert isinstance(value, relax.Call) or op is None
        if op == "relax.matmul":
            if dtype_of(value.args[0]) != "float16" or dtype_of(value.args[1]) != "float16":
                return None
            return value, scale, mask
        view = _view(value) if op is not None else None
        if (view is not None and view.axes is None) or op == "relax.astype":
            expr = value.args[0]
            continue
        if op in ("relax.multiply", "relax.divide"):
            left, right = value.args
            factor = _constant(graph, right)
            if factor is None and op == "relax.multiply":
                factor, left = _constant(graph, left), right
            if factor is None or factor == 0.0:
                return None
            scale *= factor if op == "relax.multiply" else 1.0 / factor
            expr = left
            continue
        if op == "relax.add" and mask is None and scale == 1.0:
            # Walking back, a scale already met was applied after the add, to the mask too.
            left, right = value.args
            chain, other = (left, right) if static_shape(left) == out_shape else (right, left)
            if static_shape(chain) != out_shape or dtype_of(other) not in ("float16", "float32"):
                return None
            mask, expr = other, chain
            continue
        return None


def _output(
    graph: BindingGraph, pv: relax.Var, logical: tuple[int, int, int, int]
) -> tuple[relax.Var, tuple[int, int, int]] | None:
    """The last view after ``P V`` through which the kernel can write directly, and that view's
    (batch, head, row) strides."""
    b, h, s, d = logical
    chain = [pv]
    views: list[View] = []
    while (reader := graph.sole_reader(chain[-1])) is not None:
        view = _view(graph.values[reader])
        if view is None:
            break
        chain.append(reader)
        views.append(view)
    pv_shape = static_shape(pv)
    assert pv_shape is not None
    labels = np.arange(b * h * s * d).reshape(pv_shape)
    found: tuple[relax.Var, tuple[int, int, int]] | None = None
    for end, upto in zip(chain, range(len(chain)), strict=True):
        placed = labels
        for view in views[:upto]:
            placed = view.apply(placed)
        # Where each (b, h, row, d) element lands in the view's row-major order.
        position = np.empty(placed.size, dtype=np.int64)
        position[placed.reshape(-1)] = np.arange(placed.size)
        layout = _affine(position.reshape(b, h, s, d))  # its offset is that of element 0: 0
        if layout is not None and layout[1][3] == 1 and all(x % 2 == 0 for x in layout[1][:3]):
            found = end, layout[1][:3]  # type: ignore[assignment]
    return found


def _mask_config(
    mask: relax.Expr | None, logical: tuple[int, int, int, int], rank: int
) -> tuple[int, ...] | None:
    """The mask's (batch, head, row, key) strides, its bits; zeros without a mask."""
    if mask is None:
        return (0, 0, 0, 0, 0)
    shape = static_shape(mask)
    if shape is None or len(shape) > rank:
        return None
    padded = (1,) * (rank - len(shape)) + shape
    if rank == 3:
        padded = (1, *padded)
    own = _row_major_strides(padded)
    strides = []
    for size, want, stride in zip(padded, logical, own, strict=True):
        if size not in (1, want):
            return None
        strides.append(stride if size > 1 else 0)
    return (*strides, 16 if dtype_of(mask) == "float16" else 32)


def _row_major_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides: list[int] = []
    running = 1
    for size in reversed(shape):
        strides.insert(0, running)
        running *= size
    return tuple(strides)


def _all_masked_guard(
    graph: BindingGraph, softmax: relax.Var, scores: relax.Expr
) -> relax.Var | None:
    """The ``where(row_all_masked, 0, softmax)`` that ``scaled_dot_product_attention``'s
    decomposition puts after the softmax, where its condition is
    ``not(max(int8(not(scores == -inf)), axis=-1, keepdims) as bool)`` of the softmax's input:
    the where's variable, or None."""
    guard = graph.sole_reader(softmax)
    value = graph.values.get(guard) if guard is not None else None
    if op_name(value) != "relax.where":
        return None
    condition, zero, chosen = value.args  # type: ignore[union-attr]
    if not chosen.same_as(softmax) or not isinstance(zero, Constant) or zero.value.numpy().any():
        return None
    steps = ("relax.logical_not", "relax.astype", "relax.max", "relax.astype", "relax.logical_not")
    expr = condition
    for step in steps:
        if not isinstance(expr, relax.Var) or graph.uses[expr] != 1:
            return None
        step_value = graph.values.get(expr)
        if op_name(step_value) != step:
            return None
        if step == "relax.max":
            attrs = step_value.attrs  # type: ignore[union-attr]
            axes = [int(a) for a in attrs.axis] if attrs.axis is not None else []
            rank = len(static_shape(step_value) or ())
            if axes not in ([-1], [rank - 1]) or not attrs.keepdims:
                return None
        expr = step_value.args[0]  # type: ignore[union-attr]
    equal = graph.values.get(expr) if isinstance(expr, relax.Var) else None
    if not isinstance(expr, relax.Var) or graph.uses[expr] != 1 or op_name(equal) != "relax.equal":
        return None
    left, right = equal.args  # type: ignore[union-attr]
    bound = _constant(graph, right)
    if not left.same_as(scores) or bound is None or bound != float("-inf"):
        return None
    return guard
