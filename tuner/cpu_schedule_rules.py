"""Default CPU schedules: a parallel, vectorized, register-tiled schedule for a task, no trial.

TVM 0.27 leaves conv2d and matmul on CPUs as naive single-threaded loops, and ``dlight.cpu``
has rules only for GEMV and reductions. These rules give every CPU task a schedule of the kind
a hand-written kernel library uses, written with plain TIR schedule primitives so that each
schedule is a trace: it is measured, filed and applied like any tuning record.

- **Anchor tiling** (conv, depthwise conv, dense/matmul, pooling): the anchor is the heaviest
  reduction block. The output's innermost axis is the vector axis (channels in NHWC, columns
  of a matmul); a register tile of ``rows`` x ``vectors`` accumulators sits under the reduction
  loops; the outer spatial loops are fused and parallel. Padding is computed apart (or inlined,
  in one variant) and the elementwise epilogue (bias, residual add, ReLU) is written from the
  accumulators.
- **Per block** (softmax, layer norm, reductions over the innermost axis, anything the anchor
  rule refuses): injective blocks are inlined where TIR allows; each remaining block gets its
  outer loops fused and parallel, and its innermost loop vectorized when it is contiguous.
- **Injective** (transpose, concat, reshape, elementwise): the outer loops fused and parallel,
  the innermost loop vectorized by a factor that divides it.

A rule that does not apply to a task raises inside TVM's schedule checks; the task then gets
the next rule, and at worst no default schedule. Nothing here is ever trusted without a
measurement: ``tuner.default_schedules`` times every variant and files the times.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm.ir import IRModule
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import LoopRV, SBlockRV
from tvm.sym.pattern import detect_linear_equation
from tvm.target import Target
from tvm.tirx import IntImm, IterVar
from tvm.tirx.analysis import undefined_vars

RULE_ANNOTATION = "tunefarm_default_schedule"
"""Block annotation that names the rule (and variant) a default schedule came from."""


@dataclass(frozen=True)
class TileShape:
    """One variant of the anchor rule's register tile."""

    rows: int
    """Output rows (e.g. output columns of a conv) per tile, unrolled."""
    vectors: int
    """Vector registers along the output's innermost axis per row."""
    inline_padding: bool = False
    """Read the padding on the fly instead of writing a padded copy first."""
    parallel: bool = True
    channels_outermost: bool = False
    """Each thread takes whole slices of output channels: their weights stay in its cache
    while it walks the rows (deep layers, whose weights outgrow the L2 cache)."""

    @property
    def name(self) -> str:
        pad = "-inline-pad" if self.inline_padding else ""
        serial = "" if self.parallel else "-serial"
        order = "-channels-outer" if self.channels_outermost else ""
        return f"anchor-{self.rows}x{self.vectors}{pad}{order}{serial}"


TILE_SHAPES = (
    TileShape(8, 2),
    TileShape(4, 4),
    TileShape(6, 2, inline_padding=True),
    TileShape(8, 2, channels_outermost=True),
)
"""The variants measured for an anchor task, the most often best first (bench/cpu_peers.py)."""

SMALL_ANCHOR_ITERATIONS = 1 << 18
"""Below this many multiply-adds a parallel loop's start-up costs more than it saves: such an
anchor also gets a serial variant."""


@dataclass(frozen=True)
class DefaultSchedule:
    rule: str
    """What made it: ``anchor-<rows>x<vectors>``, ``per-block``, ``injective``."""
    schedule: Schedule


@dataclass(frozen=True)
class CpuShape:
    """What the rules need to know about the CPU."""

    vector_bits: int
    cores: int

    @classmethod
    def of(cls, target: Target) -> CpuShape:
        from tvm.target import codegen

        bits = int(codegen.llvm_get_vector_width(target))
        cores = target.attrs.get("num-cores")
        return cls(vector_bits=max(128, bits), cores=int(cores) if cores else 1)

    def lanes(self, dtype: str) -> int:
        return max(1, self.vector_bits // tvm.DataType(dtype).bits)


def cpu_default_schedules(mod: IRModule, target: Target) -> list[DefaultSchedule]:
    """Every default schedule the rules can make for the task ``mod``, most promising first.

    An empty list means no rule applies; the task keeps TVM's own lowering.
    """
    if target.kind.name != "llvm":
        return []
    cpu = CpuShape.of(target)
    rules: list[tuple[str, Callable[[Schedule], None]]] = []
    anchor_size = _anchor_iterations(mod)
    if anchor_size:
        shapes = list(TILE_SHAPES)
        if anchor_size < SMALL_ANCHOR_ITERATIONS:
            shapes.append(TileShape(8, 2, parallel=False))
        for shape in shapes:
            rules.append((shape.name, functools.partial(_anchor_rule, cpu=cpu, shape=shape)))
    made: list[DefaultSchedule] = []
    seen: set[int] = set()
    rules.append(("per-block", functools.partial(_per_block_rule, cpu=cpu)))
    for name, rule in rules:
        if made and name == "per-block":
            break  # an anchor schedule exists; per block, the anchor would stay a naive loop
        sch = Schedule(mod)
        try:
            rule(sch)
            _annotate(sch, name)
        except Exception:  # TVM's schedule checks raise many kinds of errors
            continue  # the rule does not fit this task; the next one may
        key = tvm_ffi.structural_hash(sch.mod)
        if key not in seen:
            seen.add(key)
            made.append(DefaultSchedule(rule=name, schedule=sch))
    return made


TUNED = "tuned"
TVM_DEFAULT = "tvm-default"


def schedule_origin(trace: object) -> str:
    """Where a record's schedule came from: a default rule's name, ``tvm-default`` for the
    unscheduled function (an empty trace), or ``tuned`` for anything the search made."""
    insts = list(getattr(trace, "insts", []))
    if not insts:
        return TVM_DEFAULT
    for inst in insts:
        if inst.kind.name == "Annotate" and inst.attrs and str(inst.attrs[0]) == RULE_ANNOTATION:
            return str(inst.inputs[1])
    return TUNED


# -- the rules ---------------------------------------------------------------------------------


def _anchor_rule(sch: Schedule, cpu: CpuShape, shape: TileShape) -> None:
    root = sch.get_sblock("root")
    anchor = _heaviest_reduction(sch, sch.get_child_blocks(root))
    if anchor is None:
        raise ValueError("no reduction block")
    block = sch.get(anchor)
    write = block.writes[0]
    position = {iv.var: index for index, iv in enumerate(block.iter_vars)}
    extents = [_extent(iv.dom.extent) for iv in block.iter_vars]
    vector_axis = position.get(write.region[-1].min)
    if vector_axis is None or block.iter_vars[vector_axis].iter_type != IterVar.DataPar:
        raise ValueError("the output's innermost index is not a spatial block var")
    if not _contiguous_in_reads(block, block.iter_vars[vector_axis].var):
        raise ValueError("the vector axis is strided in an input")
    lanes = cpu.lanes(write.source.dtype)
    vector_width = _vector_factor(extents[vector_axis], lanes, shape.vectors)
    if vector_width is None:
        raise ValueError("the vector axis has no usable factor")
    row_axis = None
    if len(block.reads) >= 2:  # a product (conv, matmul): tile rows too
        for region in reversed(write.region[:-1]):
            axis = position.get(region.min)
            if axis is not None and (extents[axis] or 1) > 1:
                row_axis = axis
                break

    for producer in sch.get_producers(anchor):
        if _is_padding(sch, producer) and not shape.inline_padding:
            _injective_rule(sch, producer, cpu)
        else:
            sch.compute_inline(producer)
    epilogue = _epilogue_chain(sch, anchor)
    for consumer in epilogue[:-1]:
        sch.compute_inline(consumer)

    loops = sch.get_loops(anchor)
    kinds = [iv.iter_type for iv in block.iter_vars]
    outer: list[LoopRV] = []
    inner: list[LoopRV] = []
    reduction: list[LoopRV] = []
    for axis, loop in enumerate(loops):
        if kinds[axis] != IterVar.DataPar:
            reduction.append(loop)
        elif axis == vector_axis:
            vector_outer, vector_inner = sch.split(loop, [None, vector_width])
            if shape.channels_outermost:
                outer.insert(0, vector_outer)
            else:
                outer.append(vector_outer)
            inner.append(vector_inner)
        elif axis == row_axis:
            # A narrow vector (4 of 116 channels) gets more rows: the tile keeps its lanes.
            wanted = shape.rows * max(1, lanes * shape.vectors // vector_width // shape.vectors)
            rows = _row_factor(extents[axis], wanted, -(-vector_width // lanes))
            row_outer, row_inner = sch.split(loop, [None, rows])
            outer.append(row_outer)
            inner.insert(0, row_inner)
        else:
            outer.append(loop)
    sch.reorder(*outer, *reduction, *inner)
    parallel = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    if shape.parallel:
        sch.parallel(parallel)
    accumulators = sch.cache_write(anchor, 0, "local")
    sch.reverse_compute_at(accumulators, parallel)
    for loop in inner[:-1]:
        sch.unroll(loop)
    sch.vectorize(inner[-1])
    if reduction:
        sch.decompose_reduction(anchor, reduction[0])
    if epilogue:
        try:
            sch.reverse_compute_inline(epilogue[-1])
        except Exception:  # a TVM schedule check said no
            sch.reverse_compute_at(epilogue[-1], parallel)
            _unroll_and_vectorize(sch, sch.get_loops(epilogue[-1])[1:])
    _unroll_and_vectorize(sch, sch.get_loops(accumulators)[1:])
    for other in sch.get_child_blocks(root):
        if _loops_unscheduled(sch, other):
            _schedule_block(sch, other, cpu)


def _per_block_rule(sch: Schedule, cpu: CpuShape) -> None:
    root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root):
        if _is_reduction(sch, block) or _writes_output(sch, block):
            continue
        try:
            sch.compute_inline(block)
        except Exception:  # a TVM schedule check said no
            pass  # it stays a block of its own
    for block in sch.get_child_blocks(root):
        _schedule_block(sch, block, cpu)


def _schedule_block(sch: Schedule, block: SBlockRV, cpu: CpuShape) -> None:
    if _is_reduction(sch, block):
        _reduction_rule(sch, block, cpu)
    else:
        _injective_rule(sch, block, cpu)


def _injective_rule(sch: Schedule, block: SBlockRV, cpu: CpuShape) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    dtype = sch.get(block).writes[0].source.dtype
    innermost = _extent(sch.get(loops[-1]).extent)
    factor = _vector_factor(innermost, cpu.lanes(dtype), 4) if innermost else None
    outer = list(loops[:-1])
    if factor is not None and _contiguous_in_reads(sch.get(block), _innermost_var(sch, block)):
        loop_outer, loop_inner = sch.split(loops[-1], [None, factor])
        outer.append(loop_outer)
        sch.vectorize(loop_inner)
    else:
        outer.append(loops[-1])
    _parallel(sch, outer)


def _reduction_rule(sch: Schedule, block: SBlockRV, cpu: CpuShape) -> None:
    """Spatial loops outside and parallel, the reduction inside (rows of a softmax, say)."""
    loops = sch.get_loops(block)
    kinds = [iv.iter_type for iv in sch.get(block).iter_vars]
    if len(kinds) != len(loops):
        raise ValueError("block vars and loops do not match one to one")
    spatial = [loop for loop, kind in zip(loops, kinds, strict=True) if kind == IterVar.DataPar]
    reduction = [loop for loop, kind in zip(loops, kinds, strict=True) if kind != IterVar.DataPar]
    if spatial and reduction:
        sch.reorder(*spatial, *reduction)
    if spatial:
        _parallel(sch, spatial)
    if reduction:
        sch.decompose_reduction(block, reduction[0])


# -- helpers -----------------------------------------------------------------------------------


def _annotate(sch: Schedule, rule: str) -> None:
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if not blocks:
        raise ValueError("nothing to annotate")
    sch.annotate(blocks[0], RULE_ANNOTATION, rule)


def _anchor_iterations(mod: IRModule) -> int:
    """The iteration count of the task's heaviest reduction block; 0 if it has none."""
    sch = Schedule(mod)
    try:
        anchor = _heaviest_reduction(sch, sch.get_child_blocks(sch.get_sblock("root")))
    except Exception:  # no root block: not a function these rules know
        return 0
    return _iterations(sch, anchor) if anchor is not None else 0


def _heaviest_reduction(sch: Schedule, blocks: list[SBlockRV]) -> SBlockRV | None:
    best, best_size = None, 0
    for block in blocks:
        if _is_reduction(sch, block) and _iterations(sch, block) > best_size:
            best, best_size = block, _iterations(sch, block)
    return best


def _iterations(sch: Schedule, block: SBlockRV) -> int:
    size = 1
    for iv in sch.get(block).iter_vars:
        size *= _extent(iv.dom.extent) or 1
    return size


def _is_reduction(sch: Schedule, block: SBlockRV) -> bool:
    return any(iv.iter_type == IterVar.CommReduce for iv in sch.get(block).iter_vars)


def _writes_output(sch: Schedule, block: SBlockRV) -> bool:
    return not sch.get_consumers(block)


def _is_padding(sch: Schedule, block: SBlockRV) -> bool:
    return "pad" in sch.get(block).name_hint


def _epilogue_chain(sch: Schedule, anchor: SBlockRV) -> list[SBlockRV]:
    """The elementwise blocks after the anchor, while each has one consumer."""
    chain: list[SBlockRV] = []
    current = anchor
    while True:
        consumers = sch.get_consumers(current)
        if len(consumers) != 1 or _is_reduction(sch, consumers[0]):
            return chain
        chain.append(consumers[0])
        current = consumers[0]


def _contiguous_in_reads(block: object, var: object) -> bool:
    """``var`` indexes only the innermost dimension of every read, with stride 1, or not at all."""
    for region in block.reads:  # type: ignore[attr-defined]
        for dim, extent_range in enumerate(region.region):
            used = _uses_var(extent_range.min, var)
            if used and dim != len(region.region) - 1:
                return False
            if used and not _unit_stride(extent_range.min, var):
                return False
    return True


def _uses_var(expr: object, var: object) -> bool:
    return any(used.same_as(var) for used in undefined_vars(expr))


def _unit_stride(expr: object, var: object) -> bool:
    try:
        coefficients = detect_linear_equation(expr, [var])
    except Exception:  # a TVM schedule check said no
        return False
    return len(coefficients) == 2 and _extent(coefficients[0]) == 1


def _innermost_var(sch: Schedule, block: SBlockRV) -> object:
    block_node = sch.get(block)
    return block_node.iter_vars[-1].var


def _loops_unscheduled(sch: Schedule, block: SBlockRV) -> bool:
    loops = sch.get_loops(block)
    return bool(loops) and all(sch.get(loop).kind == tvm.tirx.ForKind.SERIAL for loop in loops)


def _unroll_and_vectorize(sch: Schedule, loops: list[LoopRV]) -> None:
    if not loops:
        return
    for loop in loops[:-1]:
        sch.unroll(loop)
    sch.vectorize(loops[-1])


def _parallel(sch: Schedule, loops: list[LoopRV]) -> None:
    if not loops:
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if (_extent(sch.get(fused).extent) or 0) > 1:
        sch.parallel(fused)


def _vector_factor(extent: int | None, lanes: int, vectors: int) -> int | None:
    """The widest of ``vectors`` x ``lanes`` ... 4 lanes that divides ``extent``.

    Only whole registers: a 29-wide vector for ShuffleNet's 116 channels ran 5x slower than a
    4-wide one with more rows (LLVM splits odd vectors badly)."""
    if not extent:
        return None
    for width in (lanes * vectors, lanes * 2, lanes, 8, 4):
        if width <= lanes * vectors and extent % width == 0:
            return width
    return extent if extent <= lanes * vectors else None


MAX_ACCUMULATORS = 28
"""Vector registers a register tile may hold (of AVX-512's 32; AVX2 has 16 and spills)."""


def _row_factor(extent: int | None, rows: int, registers_per_row: int) -> int:
    """``rows`` or the nearest divisor of ``extent`` below it; when that is under half of
    ``rows`` (13, a prime, has only 1), the largest divisor the registers can hold."""
    rows = min(rows, MAX_ACCUMULATORS // registers_per_row)
    near = _largest_divisor(extent, rows)
    if 2 * near >= rows:
        return near
    best = max(near, _largest_divisor(extent, max(rows, MAX_ACCUMULATORS // registers_per_row)))
    if 2 * best >= rows or not extent or extent <= rows:
        return best
    # No divisor near (109, a prime): a split that does not divide, whose last tile is cut
    # short by a predicate on the row, which leaves the vector loop whole.
    return rows


def _largest_divisor(extent: int | None, cap: int) -> int:
    extent = extent or 1
    for factor in range(min(extent, cap), 0, -1):
        if extent % factor == 0:
            return factor
    return 1


def _extent(value: object) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, IntImm):
        return int(value.value)
    return None
